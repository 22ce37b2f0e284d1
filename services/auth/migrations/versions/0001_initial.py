"""Schema auth: tenants, users, refresh tokens, API tokens, signing keys, hash-chained audit log.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE auth.tenants (
            id text PRIMARY KEY,
            name text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute(
        """
        CREATE TABLE auth.users (
            id uuid PRIMARY KEY,
            tenant_id text NOT NULL REFERENCES auth.tenants(id) ON DELETE CASCADE,
            email text NOT NULL,
            password_hash text NOT NULL,
            role text NOT NULL CHECK (role IN ('admin', 'writer', 'reader')),
            disabled boolean NOT NULL DEFAULT false,
            created_at timestamptz NOT NULL DEFAULT now(),
            UNIQUE (tenant_id, email)
        )
        """
    )
    op.execute(
        """
        CREATE TABLE auth.refresh_tokens (
            token_hash bytea PRIMARY KEY,
            family_id uuid NOT NULL,
            user_id uuid NOT NULL REFERENCES auth.users(id) ON DELETE CASCADE,
            tenant_id text NOT NULL,
            issued_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            used_at timestamptz,
            revoked_at timestamptz,
            access_jti text
        )
        """
    )
    op.execute("CREATE INDEX refresh_tokens_family_idx ON auth.refresh_tokens (family_id)")
    op.execute("CREATE INDEX refresh_tokens_expires_idx ON auth.refresh_tokens (expires_at)")
    op.execute(
        """
        CREATE TABLE auth.api_tokens (
            id text PRIMARY KEY,
            tenant_id text NOT NULL REFERENCES auth.tenants(id) ON DELETE CASCADE,
            name text NOT NULL,
            scopes text[] NOT NULL,
            secret_hash bytea NOT NULL UNIQUE,
            prev_secret_hash bytea,
            prev_valid_until timestamptz,
            created_by text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz,
            last_used_at timestamptz,
            revoked_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX api_tokens_tenant_idx ON auth.api_tokens (tenant_id)")
    op.execute(
        """
        CREATE TABLE auth.signing_keys (
            kid text PRIMARY KEY,
            alg text NOT NULL,
            public_jwk jsonb NOT NULL,
            private_key_enc bytea NOT NULL,
            kek_id text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            activates_at timestamptz NOT NULL,
            deactivated_at timestamptz,
            retire_at timestamptz
        )
        """
    )
    op.execute(
        """
        CREATE TABLE auth.dev_kek (
            id int PRIMARY KEY CHECK (id = 1),
            kek bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("COMMENT ON TABLE auth.dev_kek IS 'dev mode only: never read when TSMESH_ENV=production'")
    op.execute(
        """
        CREATE TABLE auth.audit_log (
            id bigserial PRIMARY KEY,
            at timestamptz NOT NULL,
            action text NOT NULL,
            outcome text NOT NULL,
            tenant_id text NOT NULL DEFAULT '',
            actor text NOT NULL DEFAULT '',
            client_address text NOT NULL DEFAULT '',
            request_id text NOT NULL DEFAULT '',
            detail text NOT NULL DEFAULT '',
            prev_hash bytea NOT NULL,
            hash bytea NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX audit_log_tenant_at_idx ON auth.audit_log (tenant_id, at)")
    op.execute(
        """
        CREATE FUNCTION auth.audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'auth.audit_log is append-only';
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON auth.audit_log
        FOR EACH STATEMENT EXECUTE FUNCTION auth.audit_log_append_only()
        """
    )


def downgrade() -> None:
    for table in ("audit_log", "dev_kek", "signing_keys", "api_tokens", "refresh_tokens", "users", "tenants"):
        op.execute(f"DROP TABLE IF EXISTS auth.{table}")
    op.execute("DROP FUNCTION IF EXISTS auth.audit_log_append_only()")
