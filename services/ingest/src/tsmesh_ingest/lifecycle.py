"""``tsmesh.v1.DataLifecycleService``: a tenant's retention (``ts.tenant_retention``), cardinality,
and deletion of series by selector and time range.

Served by the process holding the database pool (the writer). A retention change is read by the
next :meth:`tsmesh_ingest.retention.Retention.run_once`; nothing is deleted by it.

A deletion is one transaction: the raw points go, the rollup buckets lying wholly inside the range
go, and each touched series' range of deleted points is queued in ``ts.rollup_pending``; the answer
waits until the rollup refresher has recomputed those edge buckets from what raw data remains (so
the rollups equal a recompute from raw), then bumps the tenant's data and late generations so every
cache forgets the old answers, and reports the deletion to the audit log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import grpc
from tsmesh.v1 import lifecycle_pb2, lifecycle_pb2_grpc

from tsmesh_common.context import current_principal
from tsmesh_common.errors import InvalidArgument, Unavailable
from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_ingest.limits import LimitsProvider
from tsmesh_ingest.retention import RetentionDays
from tsmesh_ingest.rollups import RollupRefresher
from tsmesh_ingest.series_match import series_where

log = logging.getLogger(__name__)

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
_DELETE = """
WITH doomed AS (SELECT s.series_id FROM ts.series s WHERE {where}),
gone AS (
    DELETE FROM ts.points p USING doomed d
    WHERE p.series_id = d.series_id AND p.ts >= ${start} AND p.ts < ${end}
    RETURNING p.series_id, p.ts
),
ranges AS (SELECT series_id, min(ts) AS lo, max(ts) AS hi, count(*) AS n FROM gone GROUP BY series_id),
queued AS (INSERT INTO ts.rollup_pending (series_id, lo, hi) SELECT series_id, lo, hi FROM ranges RETURNING id),
whole_1m AS (
    DELETE FROM ts.rollup_1m r USING doomed d
    WHERE r.series_id = d.series_id AND r.bucket >= ${start} AND r.bucket + 60000000000 <= ${end}
    RETURNING 1
),
whole_1h AS (
    DELETE FROM ts.rollup_1h r USING doomed d
    WHERE r.series_id = d.series_id AND r.bucket >= ${start} AND r.bucket + 3600000000000 <= ${end}
    RETURNING 1
)
SELECT (SELECT count(*) FROM ranges) AS series, (SELECT coalesce(sum(n), 0) FROM ranges) AS points,
       (SELECT max(id) FROM queued) AS last_pending,
       (SELECT count(*) FROM whole_1m) + (SELECT count(*) FROM whole_1h) AS whole_buckets
"""
_TOP_LABELS = (
    "SELECT l.key AS label, count(DISTINCT l.value) AS n FROM ts.series s, jsonb_each_text(s.labels) l "
    "WHERE s.tenant_id = $1 GROUP BY l.key ORDER BY n DESC, l.key LIMIT $2"
)


class AuditSink(Protocol):
    """Where deletions are reported (:class:`tsmesh_common.audit.AuditReporter` in production)."""

    def report(self, authorization: str, action: str, outcome: str, detail: str, client_address: str = "") -> None: ...


class LifecycleServicer(lifecycle_pb2_grpc.DataLifecycleServiceServicer):
    """Retention get/set and cardinality of the caller's tenant (scope ``admin``)."""

    def __init__(
        self,
        pool: Any,
        defaults: RetentionDays,
        limits: LimitsProvider,
        redis: Any,
        namespace: RedisNamespace,
        *,
        refresher: RollupRefresher | None = None,
        audit: AuditSink | None = None,
        active_window_seconds: float = 3600.0,
        refresh_wait_s: float = 60.0,
    ) -> None:
        self._pool = pool
        self._refresher = refresher or RollupRefresher(pool)
        self._audit = audit
        self._refresh_wait = refresh_wait_s
        self._defaults = defaults
        self._limits = limits
        self._redis = redis
        self._namespace = namespace
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
            answer = await self._retention(conn, tenant_id)
        if self._audit is not None:
            days = ", ".join(f"{c}={getattr(answer.tenant, c) or 'default'}" for c in RETENTION_COLUMNS)
            self._audit.report(_authorization(context), "set_retention", "changed", f"SetRetention: {days}")
        return answer

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
        active = await self._redis.zcount(self._namespace.active_series_key(tenant_id), now - self._window, "+inf")
        return lifecycle_pb2.Cardinality(
            series_per_metric=[lifecycle_pb2.MetricSeries(metric=r["metric"], series=r["n"]) for r in per_metric],
            top_labels=[lifecycle_pb2.LabelValuesCount(label=r["label"], values=r["n"]) for r in labels],
            total_series=int(total or 0),
            active_series=int(active),
            max_active_series=self._limits.for_tenant(tenant_id).max_active_series,
        )

    async def DeleteSeries(
        self, request: lifecycle_pb2.DeleteSeriesRequest, context: Any
    ) -> lifecycle_pb2.DeleteSeriesResponse:
        principal = current_principal("admin")
        tenant_id = principal.tenant_id
        if request.end_ns <= request.start_ns:
            raise InvalidArgument("end_ns", "must be after start_ns")
        where, args = series_where(tenant_id, request.selector)
        statement = _DELETE.format(where=where, start=len(args) + 1, end=len(args) + 2)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(statement, *args, request.start_ns, request.end_ns)
        if row["points"] or row["whole_buckets"]:
            # shielded: a caller's deadline must not leave the rollups pending and the caches stale
            await asyncio.shield(self._settle(tenant_id, row["last_pending"]))
        answer = lifecycle_pb2.DeleteSeriesResponse(series=row["series"], points_deleted=int(row["points"]))
        detail = (
            f"DeleteSeries {_selector_text(request.selector)} [{request.start_ns}, {request.end_ns}): "
            f"{answer.points_deleted} points of {answer.series} series"
        )
        log.info("series deleted", extra={"tenant": tenant_id, "points": answer.points_deleted})
        if self._audit is not None:
            self._audit.report(_authorization(context), "delete_series", "deleted", detail)
        return answer

    async def _settle(self, tenant_id: str, last_pending: int | None) -> None:
        """Caches forget at once; once the touched rollup buckets are recomputed, they forget again
        (an answer cached in between may hold the old rollups)."""
        await self._bump(tenant_id)
        if last_pending is not None:
            await self._drain_pending(int(last_pending))
            await self._bump(tenant_id)

    async def _drain_pending(self, last_id: int) -> None:
        """Refresh until the ranges this deletion queued (ids up to ``last_id``) are recomputed."""
        deadline = time.monotonic() + self._refresh_wait
        while True:
            async with self._pool.acquire() as conn:
                left = await conn.fetchval("SELECT count(*) FROM ts.rollup_pending WHERE id <= $1", last_id)
            if not left:
                return
            if time.monotonic() > deadline:
                raise Unavailable("points deleted; rollups still being recomputed (retry to confirm)")
            if not await self._refresher.refresh_once():
                await asyncio.sleep(0.05)  # another refresher holds the lock

    async def _bump(self, tenant_id: str) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            ns = self._namespace
            pipe.eval(ns.bump_generation_lua, 1, ns.data_generation_key(tenant_id))
            pipe.eval(ns.bump_generation_lua, 1, ns.late_generation_key(tenant_id))
            await pipe.execute()

    async def _retention(self, conn: Any, tenant_id: str) -> lifecycle_pb2.Retention:
        row = await conn.fetchrow("SELECT * FROM ts.tenant_retention WHERE tenant_id = $1", tenant_id)
        own = lifecycle_pb2.RetentionDays(**{c: (row[c] or 0) if row is not None else 0 for c in RETENTION_COLUMNS})
        d = self._defaults
        defaults = lifecycle_pb2.RetentionDays(raw_days=d.raw, rollup_1m_days=d.rollup_1m, rollup_1h_days=d.rollup_1h)
        return lifecycle_pb2.Retention(tenant=own, defaults=defaults)


def add_to_server(servicer: LifecycleServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as ``tsmesh.v1.DataLifecycleService``."""
    lifecycle_pb2_grpc.add_DataLifecycleServiceServicer_to_server(servicer, server)


def _selector_text(selector: Any) -> str:
    ops = {1: "=", 2: "!=", 3: "=~", 4: "!~"}
    inner = ",".join(f'{m.name}{ops.get(m.op, "=")}"{m.value}"' for m in selector.matchers)
    return f"{selector.metric}{{{inner}}}"


def _authorization(context: Any) -> str:
    for key, value in (context.invocation_metadata() or ()) if context is not None else ():
        if key == "authorization":
            return str(value)
    return ""
