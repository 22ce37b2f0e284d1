"""Audit log keyed under the KEK and sealed: owned by tsmesh_audit_owner, INSERT/SELECT for the service (ADR 0107).

Migrations run as the service role (tsmesh_auth), which cannot give a table away, so the hand-over is
``tsmesh_audit.seal_audit_log()``: a function deploy/postgres/bootstrap.sql creates as the database
administrator. After this revision the service role cannot alter auth.audit_log any more: a later
migration that changes the table must be applied by the administrator.

Revision ID: 0003
Revises: 0001
"""

from alembic import op
from sqlalchemy import text

revision = "0003"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.execute(text("SELECT to_regprocedure('tsmesh_audit.seal_audit_log()')")).scalar() is None:
        raise RuntimeError(
            "function tsmesh_audit.seal_audit_log() is missing: apply deploy/postgres/bootstrap.sql"
            " as the database administrator, then migrate again"
        )
    op.execute("ALTER TABLE auth.audit_log ADD COLUMN IF NOT EXISTS key_id text NOT NULL DEFAULT ''")
    op.execute("COMMENT ON COLUMN auth.audit_log.key_id IS 'audit chain key (HMAC under the KEK); empty: SHA-256'")
    op.execute("SELECT tsmesh_audit.seal_audit_log()")
    op.execute("DROP FUNCTION IF EXISTS auth.audit_log_append_only()")


def downgrade() -> None:
    raise RuntimeError(
        "auth.audit_log is sealed (owned by tsmesh_audit_owner): the service role cannot undo 0003;"
        " the database administrator can (ADR 0107)"
    )
