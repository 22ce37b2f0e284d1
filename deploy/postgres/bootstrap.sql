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
  FOREACH r IN ARRAY ARRAY['tsmesh_ts_reader', 'tsmesh_audit_owner'] LOOP
    BEGIN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
    END;
  END LOOP;
END
$$;

GRANT tsmesh_ts_reader TO tsmesh_query;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

CREATE SCHEMA IF NOT EXISTS auth AUTHORIZATION tsmesh_auth;
CREATE SCHEMA IF NOT EXISTS ts AUTHORIZATION tsmesh_ingest;
GRANT USAGE ON SCHEMA ts TO tsmesh_ts_reader;
ALTER DEFAULT PRIVILEGES FOR ROLE tsmesh_ingest IN SCHEMA ts GRANT SELECT ON TABLES TO tsmesh_ts_reader;
GRANT SELECT ON ALL TABLES IN SCHEMA ts TO tsmesh_ts_reader;

-- The audit log is owned by tsmesh_audit_owner, a role nobody logs in as: the service role may only
-- INSERT and SELECT audit rows, never update, delete, truncate, disable the trigger (ADR 0107).
CREATE SCHEMA IF NOT EXISTS tsmesh_audit AUTHORIZATION tsmesh_audit_owner;
GRANT USAGE ON SCHEMA tsmesh_audit TO tsmesh_auth;

CREATE OR REPLACE FUNCTION tsmesh_audit.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'auth.audit_log is append-only';
END
$$;
ALTER FUNCTION tsmesh_audit.refuse_change() OWNER TO tsmesh_audit_owner;

-- Hands auth.audit_log (created by the auth migrations as tsmesh_auth) to tsmesh_audit_owner; called by
-- auth migration 0003, idempotent, only ever tightens. Runs as the administrator applying this file.
CREATE OR REPLACE FUNCTION tsmesh_audit.seal_audit_log() RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
  seq text := pg_get_serial_sequence('auth.audit_log', 'id');
BEGIN
  IF (SELECT relkind FROM pg_class WHERE oid = to_regclass('auth.audit_log')) IS DISTINCT FROM 'r' THEN
    RAISE EXCEPTION 'auth.audit_log is not a table: run the auth migrations';
  END IF;
  GRANT USAGE ON SCHEMA auth TO tsmesh_audit_owner;
  ALTER TABLE auth.audit_log OWNER TO tsmesh_audit_owner;
  DROP TRIGGER IF EXISTS audit_log_append_only ON auth.audit_log;
  CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON auth.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION tsmesh_audit.refuse_change();
  REVOKE ALL ON auth.audit_log FROM PUBLIC, tsmesh_auth;
  GRANT SELECT, INSERT ON auth.audit_log TO tsmesh_auth;
  EXECUTE format('REVOKE ALL ON SEQUENCE %s FROM PUBLIC, tsmesh_auth', seq);
  EXECUTE format('GRANT USAGE ON SEQUENCE %s TO tsmesh_auth', seq);
END
$$;
REVOKE ALL ON FUNCTION tsmesh_audit.seal_audit_log() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tsmesh_audit.seal_audit_log() TO tsmesh_auth;
