"""PostgreSQL stopped and restarted again and again under a writer that is writing and refreshing
rollups: the writer survives every outage and every acknowledged point is stored exactly once.

Each outage lands at a different point of a write or a rollup refresh; the issue's failure (a
connection left mid-protocol by a failed refresh, then used by a write: ``cannot switch to state``)
needs one to land in a narrow window, so the test repeats outages, alternating fast and immediate
shutdowns, many times (ADR 0209).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import asyncpg
import grpc
import ingest_harness
import pytest
from ingest_harness import pg_stop, point
from testkit import eventually
from throwaway import ThrowawayPostgres

pytestmark = pytest.mark.integration

ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest
own_postgres = ingest_harness.own_postgres

OUTAGES = int(os.environ.get("TSMESH_TEST_OUTAGES", "10"))


async def test_the_writer_survives_repeated_postgres_outages_and_stores_every_acknowledged_point_once(
    own_postgres: ThrowawayPostgres, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(None, dsn=own_postgres.dsn("tsmesh_ingest"))
    acked: set[tuple[int, float]] = set()
    sent = acknowledged = 0
    stop = asyncio.Event()
    rng = random.Random(17)

    async def keep_writing() -> None:
        nonlocal sent, acknowledged
        n = 0
        base = time.time_ns() - 3_600_000_000_000
        while not stop.is_set():
            pts = [point("outage", base + n * 1000 + i, float(n * 1000 + i), w=str(i % 10)) for i in range(100)]
            # every batch twice: the second takes the conflict path and leaves rollup work pending,
            # so refreshes are in flight when the database goes away
            for _ in range(2):
                sent += len(pts)
                try:
                    answer = await ingest.write(tenant_id, pts, timeout=5)
                except grpc.aio.AioRpcError:
                    continue
                assert answer.accepted == len(pts)
                acknowledged += len(pts)
                acked.update((p.timestamp_ns, p.value) for p in pts)
            n += 1
            await asyncio.sleep(0.02)

    writing = asyncio.create_task(keep_writing())
    try:
        for outage in range(OUTAGES):
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            await asyncio.to_thread(pg_stop, own_postgres, "immediate" if outage % 2 else "fast")
            await asyncio.sleep(rng.uniform(0.2, 1.5))
            await asyncio.to_thread(own_postgres.start)
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await writing

    async def stored() -> list[Any]:
        conn = await asyncpg.connect(own_postgres.dsn())
        try:
            rows = await conn.fetch("SELECT ts, value FROM ts.points")
        finally:
            await conn.close()
        return rows if len(rows) >= len(acked) else []

    rows = await eventually(stored, timeout=90, interval=0.5)
    print(f"\navailability {acknowledged}/{sent} acknowledged, {len(rows)} stored after {OUTAGES} outages")
    assert len(rows) == len({(r["ts"], r["value"]) for r in rows})  # exactly once
    assert {(r["ts"], r["value"]) for r in rows} == acked
