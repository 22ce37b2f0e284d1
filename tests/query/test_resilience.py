"""Dependencies down: Redis (serve without L2), PostgreSQL (fast UNAVAILABLE, then recovery),
a dead replica (fail over to the primary), and the caller's deadline cancelling the SQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import grpc
import pytest
from test_range import BASE, request
from throwaway import ThrowawayPostgres, free_port
from tsq_support import HOUR_NS, MINUTE_NS, Loader, query_config, start_service, stop_service

from tsmesh_query.config import DatabaseConfig
from tsmesh_query.store import Database


async def test_redis_down_and_dead_replica_still_answer(ts_db, token_mint, loader: Loader, tenant_id: str) -> None:
    sid = await loader.series(tenant_id, "cpu", {"host": "a"})
    await loader.points([(sid, BASE + i * MINUTE_NS, 2.0) for i in range(60)], pending=True)
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    dead_replica = f"postgresql://tsmesh_query@127.0.0.1:{free_port()}/nope"
    running = await start_service(query_config(ts_db, redis_url=dead_redis, replicas=(dead_replica,)), token_mint)
    try:
        now = time.time_ns()
        recent = await loader.series(tenant_id, "cpu", {"host": "b"})
        await loader.points([(recent, now - MINUTE_NS, 7.0)], pending=True)
        for _ in range(3):
            old = await running.stub.QueryRange(
                request("cpu", BASE, BASE + HOUR_NS, HOUR_NS, "sum", None, "none"), metadata=running.md(tenant_id)
            )
            assert old.series[0].buckets[0].value == 120.0
            fresh = await running.stub.QueryRange(
                request("cpu", now - HOUR_NS, now + MINUTE_NS, HOUR_NS, "sum", None, "none"),
                metadata=running.md(tenant_id),
            )
            assert [b.value for s in fresh.series for b in s.buckets] == [7.0]
    finally:
        await stop_service(running)


async def test_postgres_down_fails_fast_then_recovers(token_mint, tenant_id: str) -> None:
    pg = ThrowawayPostgres()
    try:
        admin = await asyncpg.connect(pg.dsn())
        await admin.execute("SET ROLE tsmesh_ingest")
        await admin.execute((Path(__file__).parent / "ts_schema.sql").read_text())
        await admin.close()
        loader_conn = await asyncpg.connect(pg.dsn("tsmesh_ingest"))
        loader = Loader(loader_conn)
        sid = await loader.series(tenant_id, "cpu", {})
        await loader.points([(sid, BASE, 1.0)], pending=True)
        await loader_conn.close()

        cfg = query_config(None, primary_url=pg.dsn("tsmesh_query"))
        running = await start_service(cfg, token_mint)
        md = running.md(tenant_id)
        try:
            ok = await running.stub.QueryRange(
                request("cpu", BASE, BASE + HOUR_NS, HOUR_NS, "sum", None, "none"), metadata=md
            )
            assert ok.series[0].buckets[0].value == 1.0
            pg.stop()
            codes = []
            for i in range(6):
                # a new range each time, so no cache can answer
                req = request("cpu", BASE, BASE + HOUR_NS + (i + 1) * MINUTE_NS, HOUR_NS, "sum", None, "none")
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    await running.stub.QueryRange(req, metadata=md, timeout=10)
                codes.append(err.value.code())
            assert set(codes) == {grpc.StatusCode.UNAVAILABLE}
            pg.start()

            async def answers() -> bool:
                try:
                    got = await running.stub.QueryRange(
                        request("cpu", BASE, BASE + 2 * HOUR_NS, HOUR_NS, "sum", None, "none"), metadata=md, timeout=5
                    )
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.2)
                    return False
                return got.series[0].buckets[0].value == 1.0

            deadline = time.monotonic() + 20
            while not await answers():
                assert time.monotonic() < deadline, "query service did not recover"
        finally:
            await stop_service(running)
    finally:
        pg.destroy()


async def test_cancelled_call_cancels_the_postgres_query(ts_db) -> None:
    db = Database(DatabaseConfig(primary_url=ts_db.dsn("tsmesh_query")))
    marker = f"tsq_cancel_{time.time_ns()}"
    try:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await db.fetch(f"SELECT pg_sleep(30) AS {marker}")
        admin = await asyncpg.connect(ts_db.admin_dsn)
        try:
            deadline = time.monotonic() + 5
            while await admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE $1 AND state = 'active'", f"%{marker}%"
            ):
                assert time.monotonic() < deadline, "the query kept running after the caller gave up"
                await asyncio.sleep(0.05)
        finally:
            await admin.close()
    finally:
        await db.close()
