"""``tsmesh.v1.DataLifecycleService``: a tenant's retention (``ts.tenant_retention``) and cardinality.

Served by the process holding the database pool (the writer). A retention change is read by the
next :meth:`tsmesh_ingest.retention.Retention.run_once`; nothing is deleted here.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
from tsmesh.v1 import lifecycle_pb2, lifecycle_pb2_grpc

from tsmesh_common.context import current_principal
from tsmesh_common.errors import InvalidArgument
from tsmesh_ingest.limits import LimitsProvider
from tsmesh_ingest.retention import RetentionDays

SERVICE_NAME = "tsmesh.v1.DataLifecycleService"
RETENTION_COLUMNS = ("raw_days", "rollup_1m_days", "rollup_1h_days")
MAX_DAYS = 100 * 366
MAX_ROWS = 1000

_UPSERT = (
    "INSERT INTO ts.tenant_retention (tenant_id, raw_days, rollup_1m_days, rollup_1h_days) "
    "VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO UPDATE SET "
    "raw_days = EXCLUDED.raw_days, rollup_1m_days = EXCLUDED.rollup_1m_days, rollup_1h_days = EXCLUDED.rollup_1h_days"
)
_SERIES_PER_METRIC = (
    "SELECT metric, count(*) AS n FROM ts.series WHERE tenant_id = $1 GROUP BY metric ORDER BY n DESC, metric LIMIT $2"
)
_TOP_LABELS = (
    "SELECT l.key AS label, count(DISTINCT l.value) AS n FROM ts.series s, jsonb_each_text(s.labels) l "
    "WHERE s.tenant_id = $1 GROUP BY l.key ORDER BY n DESC, l.key LIMIT $2"
)


class LifecycleServicer(lifecycle_pb2_grpc.DataLifecycleServiceServicer):
    """Retention get/set and cardinality of the caller's tenant (scope ``admin``)."""

    def __init__(
        self,
        pool: Any,
        defaults: RetentionDays,
        limits: LimitsProvider,
        redis: Any,
        *,
        active_window_seconds: float = 3600.0,
    ) -> None:
        self._pool = pool
        self._defaults = defaults
        self._limits = limits
        self._redis = redis
        self._window = active_window_seconds

    async def GetRetention(self, request: lifecycle_pb2.GetRetentionRequest, context: Any) -> lifecycle_pb2.Retention:
        tenant_id = current_principal("admin").tenant_id
        async with self._pool.acquire() as conn:
            return await self._retention(conn, tenant_id)

    async def SetRetention(self, request: lifecycle_pb2.SetRetentionRequest, context: Any) -> lifecycle_pb2.Retention:
        tenant_id = current_principal("admin").tenant_id
        for column in RETENTION_COLUMNS:
            if request.HasField(column) and not 0 <= getattr(request, column) <= MAX_DAYS:  # type: ignore[arg-type]
                raise InvalidArgument(column, f"must be between 1 and {MAX_DAYS} days (0: the default)")
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM ts.tenant_retention WHERE tenant_id = $1 FOR UPDATE", tenant_id)
            values = []
            for column in RETENTION_COLUMNS:
                if request.HasField(column):  # type: ignore[arg-type]
                    values.append(getattr(request, column) or None)
                else:
                    values.append(row[column] if row is not None else None)
            await conn.execute(_UPSERT, tenant_id, *values)
            return await self._retention(conn, tenant_id)

    async def GetCardinality(
        self, request: lifecycle_pb2.GetCardinalityRequest, context: Any
    ) -> lifecycle_pb2.Cardinality:
        tenant_id = current_principal("admin").tenant_id
        limit = request.limit or 10
        if not 0 < limit <= MAX_ROWS:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_ROWS}")
        async with self._pool.acquire() as conn:
            per_metric = await conn.fetch(_SERIES_PER_METRIC, tenant_id, limit)
            labels = await conn.fetch(_TOP_LABELS, tenant_id, limit)
            total = await conn.fetchval("SELECT count(*) FROM ts.series WHERE tenant_id = $1", tenant_id)
        now = time.time()
        active = await self._redis.zcount(f"tsmesh:ingest:active:{{{tenant_id}}}", now - self._window, "+inf")
        return lifecycle_pb2.Cardinality(
            series_per_metric=[lifecycle_pb2.MetricSeries(metric=r["metric"], series=r["n"]) for r in per_metric],
            top_labels=[lifecycle_pb2.LabelValuesCount(label=r["label"], values=r["n"]) for r in labels],
            total_series=int(total or 0),
            active_series=int(active),
            max_active_series=self._limits.for_tenant(tenant_id).max_active_series,
        )

    async def _retention(self, conn: Any, tenant_id: str) -> lifecycle_pb2.Retention:
        row = await conn.fetchrow("SELECT * FROM ts.tenant_retention WHERE tenant_id = $1", tenant_id)
        own = lifecycle_pb2.RetentionDays(**{c: (row[c] or 0) if row is not None else 0 for c in RETENTION_COLUMNS})
        d = self._defaults
        defaults = lifecycle_pb2.RetentionDays(raw_days=d.raw, rollup_1m_days=d.rollup_1m, rollup_1h_days=d.rollup_1h)
        return lifecycle_pb2.Retention(tenant=own, defaults=defaults)


def add_to_server(servicer: LifecycleServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as ``tsmesh.v1.DataLifecycleService``."""
    lifecycle_pb2_grpc.add_DataLifecycleServiceServicer_to_server(servicer, server)
