"""Two facts per 1-minute rollup bucket that let PromQL answer from it exactly what it answers from raw
points (query ADR 0312): ``ascending`` (no sample of the bucket is below the one before it: no counter
reset inside) and ``distinct_ms`` (no two samples of the bucket share a millisecond, PromQL's time
unit). NULL means unknown: such a bucket is read from raw. The writer's partial merge keeps both
(false when two merged partials interleave in time), the refresher recomputes them from raw.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE ts.rollup_1m ADD COLUMN ascending boolean, ADD COLUMN distinct_ms boolean")


def downgrade() -> None:
    op.execute("ALTER TABLE ts.rollup_1m DROP COLUMN ascending, DROP COLUMN distinct_ms")
