"""Schema ts: series registry, day-partitioned points, 1m/1h rollups, pending rollup ranges, retention.

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
        CREATE TABLE ts.series (
            series_id bigint PRIMARY KEY,
            tenant_id text NOT NULL,
            metric text NOT NULL,
            labels jsonb NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        )
        """
    )
    op.execute("CREATE INDEX series_tenant_metric_idx ON ts.series (tenant_id, metric)")
    op.execute("CREATE INDEX series_labels_gin_idx ON ts.series USING gin (labels)")
    op.execute(
        """
        CREATE TABLE ts.points (
            series_id bigint NOT NULL,
            ts bigint NOT NULL,
            value double precision NOT NULL,
            CONSTRAINT points_series_ts_key UNIQUE (series_id, ts)
        ) PARTITION BY RANGE (ts)
        """
    )
    op.execute("CREATE INDEX points_ts_brin_idx ON ts.points USING brin (ts)")
    for name in ("rollup_1m", "rollup_1h"):
        op.execute(
            f"""
            CREATE TABLE ts.{name} (
                series_id bigint NOT NULL,
                bucket bigint NOT NULL,
                count bigint NOT NULL,
                sum double precision NOT NULL,
                min double precision NOT NULL,
                max double precision NOT NULL,
                first_ts bigint NOT NULL,
                first double precision NOT NULL,
                last_ts bigint NOT NULL,
                last double precision NOT NULL,
                PRIMARY KEY (series_id, bucket)
            )
            """
        )
    op.execute(
        """
        CREATE TABLE ts.rollup_pending (
            id bigserial PRIMARY KEY,
            series_id bigint NOT NULL,
            lo bigint NOT NULL,
            hi bigint NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
            CHECK (lo <= hi)
        )
        """
    )
    op.execute("CREATE INDEX rollup_pending_series_idx ON ts.rollup_pending (series_id)")
    op.execute(
        """
        CREATE TABLE ts.tenant_retention (
            tenant_id text PRIMARY KEY,
            raw_days int CHECK (raw_days > 0),
            rollup_1m_days int CHECK (rollup_1m_days > 0),
            rollup_1h_days int CHECK (rollup_1h_days > 0)
        )
        """
    )


def downgrade() -> None:
    for name in ("tenant_retention", "rollup_pending", "rollup_1h", "rollup_1m", "points", "series"):
        op.execute(f"DROP TABLE IF EXISTS ts.{name} CASCADE")
