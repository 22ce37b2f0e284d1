-- Roles and schemas of the tsmesh database, least privilege, idempotent.
-- Run as a superuser inside the tsmesh database (make run, the tests, the compose init script).
-- Each service migrates only its own schema, as its own role; query only reads `ts`.
DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['tsmesh_auth', 'tsmesh_ingest', 'tsmesh_query'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I LOGIN', r);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END LOOP;
  BEGIN
    CREATE ROLE tsmesh_ts_reader NOLOGIN;
  EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
  END;
END
$$;

GRANT tsmesh_ts_reader TO tsmesh_query;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION tsmesh_auth;
CREATE SCHEMA IF NOT EXISTS ts AUTHORIZATION tsmesh_ingest;
GRANT USAGE ON SCHEMA ts TO tsmesh_ts_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE tsmesh_ingest IN SCHEMA ts GRANT SELECT ON TABLES TO tsmesh_ts_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA ts TO tsmesh_ts_reader;
