"""A dependency of the writer path fails for ten seconds under load: PostgreSQL stopped (a private
cluster), the broker unreachable (a private bundled broker paused with SIGSTOP, never killed), Redis stopped
(a private redis-server), and
PostgreSQL crashed and restarted again and again (long). Each scenario checks that every
acknowledged point is stored exactly once and prints its availability."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ingest"))

import ingest_harness
from chaos_harness import (
    Load,
    PausableBroker,
    chaos_long,
    check_exactly_once,
    report,
)
from ingest_harness import Ingest, ingest_env, pg_stop, point
from testkit import eventually
from throwaway import ThrowawayPostgres, ThrowawayRedis

from tsmesh_common.server import create_server
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.runtime import build_runtime
from tsmesh_ingest.topics import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest
own_postgres = ingest_harness.own_postgres


def point_load(ingest: Any, tenant_id: str, metric: str, per_batch: int = 100) -> Load:
    base = time.time_ns()

    async def send(n: int) -> list[tuple[int, float]]:
        pts = [point(metric, base + n * 1000 + i, float(n * 1000 + i), w=str(i % 10)) for i in range(per_batch)]
        load.sent += len(pts)
        answer = await ingest.write(tenant_id, pts, timeout=5)
        assert answer.accepted == len(pts)
        return [(p.timestamp_ns, p.value) for p in pts]

    load = Load(send)
    return load


def rows_of(dsn: str) -> Any:
    async def stored() -> list[tuple[int, float]]:
        try:
            conn = await asyncpg.connect(dsn)
        except (OSError, asyncpg.PostgresError):
            return []
        try:
            return [(r["ts"], r["value"]) for r in await conn.fetch("SELECT ts, value FROM ts.points")]
        finally:
            await conn.close()

    return stored


async def test_postgres_stopped_for_ten_seconds(
    own_postgres: ThrowawayPostgres, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(None, dsn=own_postgres.dsn("tsmesh_ingest"))
    load = point_load(ingest, tenant_id, "chaos_pg")
    load.start()
    await asyncio.sleep(1.0)
    await asyncio.to_thread(pg_stop, own_postgres, "fast")
    await asyncio.sleep(10.0)
    await asyncio.to_thread(own_postgres.start)
    await asyncio.sleep(1.0)
    await load.stop()
    report("postgres stopped 10 s", load)
    await check_exactly_once(load, rows_of(own_postgres.dsn()))


async def test_broker_unreachable_for_ten_seconds(ts_db: Any, start_ingest: Any, tenant_id: str) -> None:
    broker = await asyncio.to_thread(PausableBroker)
    try:
        ingest = await start_ingest(ts_db, bootstrap=broker.bootstrap)
        await create_topics(ingest.cfg.kafka)
        await eventually(lambda: ingest.runtime.ready, timeout=30)
        load = point_load(ingest, tenant_id, "chaos_broker")
        load.start()
        await asyncio.sleep(1.0)
        broker.pause()
        try:
            await asyncio.sleep(10.0)
        finally:
            broker.resume()
        await asyncio.sleep(2.0)
        await load.stop()
        report("broker unreachable 10 s", load)
        await check_exactly_once(load, rows_of(ts_db.admin_dsn))
    finally:
        broker.resume()
        await asyncio.to_thread(broker.stop)


async def test_redis_stopped_for_ten_seconds(ts_db: Any, broker: Any, token_mint: Any, tenant_id: str) -> None:
    redis = await asyncio.to_thread(ThrowawayRedis)
    client = aioredis.Redis.from_url(redis.url)
    cfg = IngestConfig.from_env(ingest_env(ts_db.dsn("tsmesh_ingest"), broker.bootstrap, TSMESH_REDIS_URL=redis.url))
    await create_topics(cfg.kafka)
    runtime = await build_runtime(cfg, token_mint.authenticator(), client)
    try:
        port = await create_server(runtime.app, cfg.common)
        await runtime.start()
        await eventually(lambda: runtime.ready, timeout=30)
        ingest = Ingest(runtime, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), cfg, token_mint, ts_db)
        load = point_load(ingest, tenant_id, "chaos_redis")
        load.start()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(redis.stop)
        await asyncio.sleep(10.0)
        await asyncio.to_thread(redis.start)
        await asyncio.sleep(2.0)
        await load.stop()
        report("redis stopped 10 s", load)
        await check_exactly_once(load, rows_of(ts_db.admin_dsn))
        await ingest.channel.close()
    finally:
        await runtime.app.stop(0.2)
        await client.aclose()
        await asyncio.to_thread(redis.stop)


@chaos_long
async def test_postgres_crashed_and_restarted_forty_times(
    own_postgres: ThrowawayPostgres, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(None, dsn=own_postgres.dsn("tsmesh_ingest"))
    load = point_load(ingest, tenant_id, "chaos_pg_repeat")
    load.start()
    for outage in range(40):
        await asyncio.sleep(0.2 + (outage % 7) * 0.15)
        await asyncio.to_thread(pg_stop, own_postgres, "immediate" if outage % 2 else "fast")
        await asyncio.sleep(0.3 + (outage % 5) * 0.3)
        await asyncio.to_thread(own_postgres.start)
    await asyncio.sleep(1.0)
    await load.stop()
    report("postgres crashed 40 times", load)
    await check_exactly_once(load, rows_of(own_postgres.dsn()))
