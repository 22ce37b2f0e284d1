"""Per-tenant limits through the API; partition maintenance and retention against the database."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import grpc
import ingest_harness
import orjson
import pytest
from ingest_harness import point

from tsmesh_ingest.partitions import DAY_NS, PartitionManager, partition_name, today
from tsmesh_ingest.retention import Retention, RetentionDays

pytestmark = pytest.mark.integration

# Fixtures shared by the ingest tests (no conftest.py here: it would shadow the root one).
ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest


async def test_points_per_second_limit_refuses_with_its_name_and_a_retry_hint(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    limits = {tenant_id: {"points_per_second": 10, "burst_points": 20}}
    ingest = await start_ingest(
        ts_db,
        env={
            "TSMESH_INGEST_TENANT_LIMITS": orjson.dumps(limits).decode(),
            "TSMESH_INGEST_MAX_POINTS_PER_REQUEST": "20",
            "TSMESH_INGEST_MODE": "api",
        },
    )
    now = time.time_ns()
    assert (await ingest.write(tenant_id, [point("m", now + i, 1) for i in range(15)])).accepted == 15
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await ingest.write(tenant_id, [point("m", now + 100 + i, 1) for i in range(15)])
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    trailing = dict(limited.value.trailing_metadata() or ())
    assert trailing["tsmesh-limit"] == "points_per_second"
    assert 0.5 < float(trailing["retry-after"]) <= 1.5
    other = await ingest.write(f"{tenant_id}-other", [point("m", now + i, 1) for i in range(15)])
    assert other.accepted == 15


async def test_max_active_series_limit(ts_db: Any, start_ingest: Any, tenant_id: str) -> None:
    ingest = await start_ingest(
        ts_db,
        env={
            "TSMESH_INGEST_TENANT_LIMITS": orjson.dumps({tenant_id: {"max_active_series": 3}}).decode(),
            "TSMESH_INGEST_MODE": "api",
        },
    )
    now = time.time_ns()
    assert (await ingest.write(tenant_id, [point("m", now, 1, i=str(i)) for i in range(3)])).accepted == 3
    assert (await ingest.write(tenant_id, [point("m", now + 1, 2, i="0")])).accepted == 1
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await ingest.write(tenant_id, [point("m", now, 1, i="new")])
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(limited.value.trailing_metadata() or ())["tsmesh-limit"] == "max_active_series"
    assert "max_active_series" in (limited.value.details() or "")


async def test_partitions_are_created_ahead_and_retention_drops_and_trims(ts_db: Any) -> None:
    pool = await asyncpg.create_pool(ts_db.dsn("tsmesh_ingest"), min_size=1, max_size=2)
    try:
        manager = PartitionManager()
        async with pool.acquire() as conn:
            assert await manager.ensure_window(conn, past_days=5, ahead_days=3) == 9
            assert await manager.ensure_window(conn, past_days=5, ahead_days=3) == 0
            days = await manager.existing(conn)
        assert days == set(range(today() - 5, today() + 4))

        now = time.time_ns()
        old, recent = now - 4 * DAY_NS, now - DAY_NS // 2
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO ts.series (series_id, tenant_id, metric, labels) VALUES "
                "(1, 'keep-long', 'm', '{}'), (2, 'default', 'm', '{}'), (3, 'short', 'm', '{}')"
            )
            for sid in (1, 2, 3):
                for ts in (old, recent):
                    await conn.execute("INSERT INTO ts.points VALUES ($1, $2, 1.0)", sid, ts)
                    await conn.execute(
                        "INSERT INTO ts.rollup_1m VALUES ($1, $2, 1, 1, 1, 1, $2, 1, $2, 1)",
                        sid,
                        ts - ts % 60_000_000_000,
                    )
            await conn.execute(
                "INSERT INTO ts.tenant_retention VALUES ('keep-long', 10, 10, NULL), ('short', 1, 1, NULL)"
            )
        retention = Retention(pool, manager, RetentionDays(raw=2, rollup_1m=2, rollup_1h=30))
        report = await retention.run_once(now)
        assert report.dropped_partitions == []  # 'keep-long' keeps raw data 10 days
        async with pool.acquire() as conn:
            points = await conn.fetch("SELECT series_id, ts FROM ts.points ORDER BY 1, 2")
            rollups = await conn.fetch("SELECT series_id FROM ts.rollup_1m ORDER BY 1, bucket")
        assert [(r["series_id"], r["ts"]) for r in points] == [(1, old), (1, recent), (2, recent), (3, recent)]
        assert [r["series_id"] for r in rollups] == [1, 1, 2, 3]

        async with pool.acquire() as conn:
            await conn.execute("DELETE FROM ts.tenant_retention")
        report = await retention.run_once(now)
        assert partition_name(old // DAY_NS) in report.dropped_partitions
        assert partition_name(today() - 1) not in report.dropped_partitions
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM ts.points WHERE ts = $1", old) == 0
    finally:
        await pool.close()
