"""Dependencies failing: the broker unreachable or gone, PostgreSQL down for ten seconds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import grpc
import ingest_harness
import pytest
from ingest_harness import point
from testkit import eventually
from throwaway import TansuBroker, ThrowawayPostgres, free_port

pytestmark = pytest.mark.integration

# Fixtures shared by the ingest tests (no conftest.py here: it would shadow the root one).
ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest
own_postgres = ingest_harness.own_postgres


async def test_write_fails_unavailable_when_the_broker_is_unreachable(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db, bootstrap=f"127.0.0.1:{free_port()}", env={"TSMESH_INGEST_MODE": "api"})
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest.write(tenant_id, [point("m", time.time_ns(), 1.0)], timeout=2.0)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_write_fails_unavailable_within_its_deadline_when_the_broker_dies(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    broker = await asyncio.to_thread(TansuBroker)
    try:
        from tsmesh_ingest.topics import create_topics

        ingest = await start_ingest(ts_db, bootstrap=broker.bootstrap, env={"TSMESH_INGEST_MODE": "api"})
        await create_topics(ingest.cfg.kafka)
        ok = await eventually(lambda: _try_write(ingest, tenant_id))
        assert ok.accepted == 1
        await asyncio.to_thread(broker.stop)
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await ingest.write(tenant_id, [point("m", time.time_ns(), 1.0)], timeout=1.5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await asyncio.to_thread(broker.stop)


async def _try_write(ingest: Any, tenant_id: str) -> Any:
    try:
        return await ingest.write(tenant_id, [point("m", time.time_ns(), 1.0)], timeout=2.0)
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.UNAVAILABLE
        return None


async def test_every_acknowledged_point_is_stored_after_postgres_was_down_for_ten_seconds(
    own_postgres: ThrowawayPostgres, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(None, dsn=own_postgres.dsn("tsmesh_ingest"))
    acked: list[tuple[int, float]] = []
    stop = asyncio.Event()

    async def keep_writing() -> None:
        n = 0
        base = time.time_ns()
        while not stop.is_set():
            pts = [point("outage", base + n * 1000 + i, float(n * 1000 + i), w=str(i % 10)) for i in range(200)]
            answer = await ingest.write(tenant_id, pts, timeout=5)
            assert answer.accepted == 200
            acked.extend((p.timestamp_ns, p.value) for p in pts)
            n += 1
            await asyncio.sleep(0.05)

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(1.0)
    await asyncio.to_thread(own_postgres.stop)
    before_outage = len(acked)
    await asyncio.sleep(10.0)
    assert len(acked) > before_outage  # writes kept being acknowledged while the database was down
    await asyncio.to_thread(own_postgres.start)
    await asyncio.sleep(1.0)
    stop.set()
    await writer

    async def stored() -> list[Any]:
        conn = await asyncpg.connect(own_postgres.dsn())
        try:
            rows = await conn.fetch("SELECT ts, value FROM ts.points")
        finally:
            await conn.close()
        return rows if len(rows) >= len(acked) else []

    rows = await eventually(stored, timeout=60)
    assert sorted((r["ts"], r["value"]) for r in rows) == sorted(acked)
