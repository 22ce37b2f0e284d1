"""Helpers of the query tests: schema ts, a data loader (COPY, as the writer does) and an
in-process query service on port 0 with real PostgreSQL, Redis and JWTs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import redis.asyncio as aioredis
from testkit import fresh_namespace
from tsmesh.v1 import query_pb2_grpc

from tsmesh_common.bootstrap import Mesh
from tsmesh_common.config import CommonConfig
from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_query.config import CacheConfig, DatabaseConfig, QueryConfig, QueryLimits, SubscribeConfig
from tsmesh_query.wiring import QueryClients, QueryComponents, build, create_redis

HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("TSMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# The query tests' deployment: its services are replicas sharing L2 entries and generations, under
# a namespace no other stack on the shared Redis uses.
QUERY_NS = fresh_namespace()
Database = Any
TokenMint = Any
ROOT = HERE.parent.parent
DAY_NS = 86_400 * 1_000_000_000
MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS
# ingest's refresher sum: a numeric sum as float8, +-Infinity past the float8 range, NaN kept
SATURATING_SUM = (
    "CASE WHEN sum(value::numeric) = 'NaN'::numeric THEN 'NaN'::float8 "
    "WHEN sum(value::numeric) > 1.7976931348623157e308 THEN 'Infinity'::float8 "
    "WHEN sum(value::numeric) < -1.7976931348623157e308 THEN '-Infinity'::float8 "
    "ELSE sum(value::numeric)::float8 END"
)


def migrate_ts(db: Database) -> None:
    """Create schema ts with ingest's Alembic migrations (in a subprocess), else the SQL fixture."""
    code = "import sys; from tsmesh_ingest.migrate import upgrade; upgrade(sys.argv[1])"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, db.dsn("tsmesh_ingest")], capture_output=True, timeout=60, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"ingest migrations failed: {done.stderr.decode()[-2000:]}")


async def ensure_schema(db: Database) -> None:
    try:
        migrate_ts(db)
        return
    except (RuntimeError, subprocess.TimeoutExpired):
        pass
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        await conn.execute("SET ROLE tsmesh_ingest")
        await conn.execute((HERE / "ts_schema.sql").read_text())
    finally:
        await conn.close()


@dataclass
class Loader:
    """Writes series, points, rollups and pending ranges the way ingest's writer and refresher do."""

    conn: asyncpg.Connection

    async def partitions(self, lo_ns: int, hi_ns: int) -> None:
        day = lo_ns // DAY_NS
        while day * DAY_NS <= hi_ns:
            name = dt.datetime.fromtimestamp(day * 86_400, tz=dt.UTC).strftime("points_p%Y%m%d")
            await self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS ts.{name} PARTITION OF ts.points "
                f"FOR VALUES FROM ({day * DAY_NS}) TO ({(day + 1) * DAY_NS})"
            )
            day += 1

    async def series(self, tenant: str, metric: str, labels: dict[str, str]) -> int:
        sid = int.from_bytes(os.urandom(8), "big", signed=True)
        await self.conn.execute(
            "INSERT INTO ts.series (series_id, tenant_id, metric, labels) VALUES ($1, $2, $3, $4::jsonb)",
            sid,
            tenant,
            metric,
            json.dumps(labels),
        )
        return sid

    async def points(self, rows: Sequence[tuple[int, int, float]], *, pending: bool = False) -> None:
        if not rows:
            return
        await self.partitions(min(r[1] for r in rows), max(r[1] for r in rows))
        await self.conn.copy_records_to_table("points", schema_name="ts", records=rows)
        if pending:
            spans: dict[int, tuple[int, int]] = {}
            for sid, ts, _ in rows:
                lo, hi = spans.get(sid, (ts, ts))
                spans[sid] = (min(lo, ts), max(hi, ts))
            await self.conn.executemany(
                "INSERT INTO ts.rollup_pending (series_id, lo, hi) VALUES ($1, $2, $3)",
                [(sid, lo, hi) for sid, (lo, hi) in spans.items()],
            )

    async def refresh_rollups(self, series_ids: Sequence[int]) -> None:
        """Recompute the 1m and 1h buckets of these series from raw and clear their pending ranges
        (what ingest's refresher does, in one transaction; sums past the float8 range saturate to
        +-Infinity as its overflow fallback does; 1m buckets say whether their values never go down and
        their milliseconds are distinct)."""
        async with self.conn.transaction():
            for table, width in (("rollup_1m", MINUTE_NS), ("rollup_1h", HOUR_NS)):
                await self.conn.execute(f"DELETE FROM ts.{table} WHERE series_id = ANY($1::bigint[])", series_ids)
                flags = (
                    ", bool_and(prev IS NULL OR NOT value < prev)"
                    ", bool_and(prev_ts IS NULL OR ts / 1000000 > prev_ts / 1000000)"
                    if table == "rollup_1m"
                    else ""
                )
                await self.conn.execute(
                    f"""
                    INSERT INTO ts.{table}
                    SELECT series_id, ts - ts % {width}, count(*), {SATURATING_SUM}, min(value), max(value), min(ts),
                           (array_agg(value ORDER BY ts))[1], max(ts), (array_agg(value ORDER BY ts DESC))[1]{flags}
                    FROM (SELECT series_id, ts, value,
                            lag(value) OVER (PARTITION BY series_id, ts - ts % {width} ORDER BY ts) AS prev,
                            lag(ts) OVER (PARTITION BY series_id, ts - ts % {width} ORDER BY ts) AS prev_ts
                          FROM ts.points WHERE series_id = ANY($1::bigint[])) AS p
                    GROUP BY 1, 2
                    """,
                    series_ids,
                )
            await self.conn.execute("DELETE FROM ts.rollup_pending WHERE series_id = ANY($1::bigint[])", series_ids)


def query_config(
    db: Database | None,
    *,
    redis_url: str = REDIS_URL,
    primary_url: str | None = None,
    replicas: tuple[str, ...] = (),
    limits: QueryLimits | None = None,
    cache: CacheConfig | None = None,
    subscribe: SubscribeConfig | None = None,
    namespace: RedisNamespace = QUERY_NS,
) -> QueryConfig:
    environ = {"TSMESH_GRPC_PORT": "0", "TSMESH_REDIS_URL": redis_url, "TSMESH_REDIS_NAMESPACE": namespace.name}
    common = CommonConfig.from_env(environ, service="query", grpc_port=0, metrics_port=0)
    url = primary_url or (db.dsn("tsmesh_query") if db else "postgresql://tsmesh_query@127.0.0.1:1/none")
    return QueryConfig(
        common=common,
        database=DatabaseConfig(primary_url=url, replica_urls=replicas, breaker_reset_s=0.5),
        limits=limits or QueryLimits(),
        cache=cache or CacheConfig(),
        subscribe=subscribe or SubscribeConfig(heartbeat_s=0.2),
    )


@dataclass
class Running:
    components: QueryComponents
    channel: grpc.aio.Channel
    stub: query_pb2_grpc.QueryServiceStub
    mint: TokenMint

    def md(self, tenant: str, scopes: str = "read") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.mint.token(tenant, scopes)}"),)


async def start_service(cfg: QueryConfig, mint: TokenMint) -> Running:
    components = build(cfg, QueryClients(create_redis(cfg.common.redis_url), Mesh(mint.authenticator())))
    port = await components.app.start("127.0.0.1", 0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    return Running(components, channel, query_pb2_grpc.QueryServiceStub(channel), mint)


async def stop_service(running: Running) -> None:
    await running.channel.close()
    await running.components.app.stop(0.2)


async def bump(redis: aioredis.Redis, tenant: str) -> None:
    """What the writer does after each commit."""
    await redis.incr(QUERY_NS.data_generation_key(tenant))


async def bump_late(redis: aioredis.Redis, tenant: str) -> None:
    """What the writer does after a commit holding a point older than ``LATE_WRITE_SECONDS``."""
    await redis.incr(QUERY_NS.late_generation_key(tenant))
