"""Rollup tables keep free space on each page, so the writer's per-batch merges update in place (HOT).

The writer merges every fast-path batch's partial aggregates into ``ts.rollup_1m`` and
``ts.rollup_1h`` (ADR 0205): each batch updates one row per (series, bucket) it touched. With full
pages every update is a new tuple on another page plus a primary-key index entry; with half of each
page free, most are heap-only tuple (HOT) updates and cost about half the CPU.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ROLLUP_FILLFACTOR = 50


def upgrade() -> None:
    for name in ("rollup_1m", "rollup_1h"):
        op.execute(f"ALTER TABLE ts.{name} SET (fillfactor = {ROLLUP_FILLFACTOR})")


def downgrade() -> None:
    for name in ("rollup_1m", "rollup_1h"):
        op.execute(f"ALTER TABLE ts.{name} RESET (fillfactor)")
