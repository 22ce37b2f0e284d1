"""Durable access-token revocations, the creator of each API token, and who reported each audit event.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # One row per revoked access-token id, kept until the token would have expired anyway (ADR 0106).
    # published_at is NULL while the Redis announcement is still owed (auth retries it).
    op.execute(
        """
        CREATE TABLE auth.revocations (
            token_id text PRIMARY KEY,
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz NOT NULL DEFAULT now(),
            published_at timestamptz
        )
        """
    )
    op.execute("CREATE INDEX revocations_expires_idx ON auth.revocations (expires_at)")
    op.execute("CREATE INDEX revocations_unpublished_idx ON auth.revocations (token_id) WHERE published_at IS NULL")
    # The credential (access-token jti or API token id) an API token was created with: revoking that
    # credential for cause revokes what it created.
    op.execute("ALTER TABLE auth.api_tokens ADD COLUMN created_by_token text")
    op.execute("CREATE INDEX api_tokens_created_by_token_idx ON auth.api_tokens (created_by_token)")
    # The service (authenticated by its service credential) that vouched for an event's client
    # address or reported it; '' for events auth saw directly.
    op.execute("ALTER TABLE auth.audit_log ADD COLUMN reporter text NOT NULL DEFAULT ''")


def downgrade() -> None:
    op.execute("ALTER TABLE auth.audit_log DROP COLUMN IF EXISTS reporter")
    op.execute("DROP INDEX IF EXISTS auth.api_tokens_created_by_token_idx")
    op.execute("ALTER TABLE auth.api_tokens DROP COLUMN IF EXISTS created_by_token")
    op.execute("DROP TABLE IF EXISTS auth.revocations")
