"""Rollups merged from the writer's partial aggregates (ADR 0205), checked against raw recomputes.

The contract query relies on: a rollup row of a (series, bucket) that no pending range covers is
exactly the aggregate of the raw points, after every transaction, whatever mix of in-order, late,
out-of-order, rewritten, repeated and redelivered points came in.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import asyncpg
import ingest_harness
import numpy as np
import pytest
from ingest_harness import point
from tsmesh.v1 import common_pb2

from tsmesh_ingest.partitions import PartitionManager
from tsmesh_ingest.rollups import RollupRefresher
from tsmesh_ingest.series_id import series_id, signed_array
from tsmesh_ingest.store import (
    HOUR_NS,
    MINUTE_NS,
    Item,
    KnownSeries,
    PointStore,
    coarsen,
    columns_of,
    partials_of,
)

ts_db = ingest_harness.ts_db

Key = tuple[int, int]
Aggregate = tuple[int, float, float, float, int, float, int, float]


def aggregate(points: Iterable[tuple[int, float]]) -> Aggregate:
    """(count, sum, min, max, first_ts, first, last_ts, last) the way SQL computes it (NaN ranks highest)."""
    ordered = sorted(points)
    values = [v for _, v in ordered]
    finite = [v for v in values if not math.isnan(v)]
    lowest = min(finite) if finite else math.nan
    highest = math.nan if len(finite) < len(values) else max(values)
    return (len(ordered), sum(values), lowest, highest, ordered[0][0], ordered[0][1], ordered[-1][0], ordered[-1][1])


def expected(points: list[tuple[int, int, float]], width: int) -> dict[Key, Aggregate]:
    groups: dict[Key, list[tuple[int, float]]] = {}
    for sid, ts, value in points:
        groups.setdefault((sid, ts // width * width), []).append((ts, value))
    return {key: aggregate(rows) for key, rows in groups.items()}


def same(a: Aggregate, b: Aggregate) -> bool:
    return all((isinstance(x, float) and math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a, b, strict=True))


def test_partials_match_a_per_bucket_aggregate_nan_included() -> None:
    rng = random.Random(7)
    rows = {(rng.randrange(3), rng.randrange(3 * HOUR_NS)) for _ in range(400)}
    points = [(sid, ts, rng.choice([math.nan, float(rng.randrange(-50, 50))])) for sid, ts in rows]
    points.sort(key=lambda p: (p[0], p[1]))
    sids = np.array([p[0] for p in points], dtype=np.int64)
    tss = np.array([p[1] for p in points], dtype=np.int64)
    values = np.array([p[2] for p in points], dtype=np.float64)
    minutes = partials_of(sids, tss, values, MINUTE_NS)
    for width, partials in ((MINUTE_NS, minutes), (HOUR_NS, coarsen(minutes, HOUR_NS))):
        got = {
            (int(partials.sids[i]), int(partials.buckets[i])): (
                int(partials.count[i]),
                float(partials.sum[i]),
                float(partials.min[i]),
                float(partials.max[i]),
                int(partials.first_ts[i]),
                float(partials.first[i]),
                int(partials.last_ts[i]),
                float(partials.last[i]),
            )
            for i in range(len(partials.sids))
        }
        want = expected(points, width)
        assert got.keys() == want.keys()
        assert all(same(got[k], want[k]) for k in want), width

    # A record without points (or a batch of them) has no partials and no pending ranges.
    cols = columns_of([Item("t", common_pb2.PointBatch(tenant_id="t"), [])], KnownSeries())
    assert len(cols.sids) == len(cols.minutes.sids) == len(cols.hours.sids) == 0 and cols.pending == {}


def item(tenant: str, points: list[common_pb2.Point]) -> Item:
    ids = [series_id(tenant, p.metric, p.labels.items()) for p in points]
    batch = common_pb2.PointBatch(tenant_id=tenant, points=points, series_ids=ids, accepted_at_ns=time.time_ns())
    return Item(tenant, batch, signed_array(ids), batch.SerializeToString())


async def check_contract(conn: Any) -> int:
    """Every rollup row of a bucket no pending range covers equals the raw aggregate, and every raw
    bucket no pending range covers has its row; returns how many buckets pending ranges covered."""
    raw = [
        (r["series_id"], r["ts"], r["value"]) for r in await conn.fetch("SELECT series_id, ts, value FROM ts.points")
    ]
    pending_rows = await conn.fetch("SELECT series_id, lo, hi FROM ts.rollup_pending")
    pending = [(r["series_id"], r["lo"], r["hi"]) for r in pending_rows]
    covered = 0
    for table, width in (("rollup_1m", MINUTE_NS), ("rollup_1h", HOUR_NS)):
        rows = await conn.fetch(f"SELECT * FROM ts.{table}")
        stored: dict[Key, Aggregate] = {
            (r["series_id"], r["bucket"]): (r["count"], r["sum"], r["min"], r["max"], r["first_ts"], r["first"],
                                             r["last_ts"], r["last"])
            for r in rows
        }  # fmt: skip
        want = expected(raw, width)
        for key in want.keys() | stored.keys():
            sid, bucket = key
            if any(s == sid and lo < bucket + width and hi >= bucket for s, lo, hi in pending):
                covered += 1
                continue
            assert key in stored and key in want, (table, key, stored.get(key), want.get(key))
            assert same(stored[key], want[key]), (table, key, stored[key], want[key])
    flags = await conn.fetch("SELECT series_id, bucket, ascending, distinct_ms FROM ts.rollup_1m")
    for r in flags:
        if any(s == r["series_id"] and lo < r["bucket"] + MINUTE_NS and hi >= r["bucket"] for s, lo, hi in pending):
            continue
        ordered = sorted(
            (ts, v) for sid, ts, v in raw if sid == r["series_id"] and ts // MINUTE_NS * MINUTE_NS == r["bucket"]
        )
        pairs = list(itertools.pairwise(ordered))
        assert r["ascending"] is not None and r["distinct_ms"] is not None, r
        # a flag may be false where the truth is unknown (interleaved merges), never true where false
        assert not r["ascending"] or not any(b[1] < a[1] for a, b in pairs), (r, ordered)
        assert not r["distinct_ms"] or not any(b[0] // 10**6 == a[0] // 10**6 for a, b in pairs), (r, ordered)
    return covered


@contextlib.asynccontextmanager
async def writer_parts(ts_db: Any, connections: int) -> AsyncIterator[tuple[Any, PointStore, RollupRefresher]]:
    """A pool on the ts schema with today's partitions, a writer's store and a refresher on it."""
    pool = await asyncpg.create_pool(ts_db.dsn("tsmesh_ingest"), min_size=1, max_size=connections)
    try:
        async with pool.acquire() as conn:
            await PartitionManager().ensure_window(conn, 1, 1)
        yield pool, PointStore(pool, PartitionManager(), KnownSeries()), RollupRefresher(pool)
    finally:
        await pool.close()


@pytest.mark.integration
async def test_merged_partials_keep_rollups_exact_under_late_rewritten_and_redelivered_batches(
    ts_db: Any, tenant_id: str
) -> None:
    async with writer_parts(ts_db, 3) as (pool, store, refresher):
        rng = random.Random(2205)
        t0 = (time.time_ns() // HOUR_NS - 2) * HOUR_NS  # two hours back: batches straddle hour boundaries
        sent: list[list[Item]] = []
        covered = 0
        for step in range(60):
            kind = rng.choice(["new", "new", "late", "redeliver", "rewrite", "duplicate"])
            if kind == "redeliver" and sent:
                items = rng.choice(sent)
            else:
                base = t0 + (step if kind != "late" else rng.randrange(step + 1)) * 3 * MINUTE_NS // 2
                points = [
                    point("merge", base + rng.randrange(3 * MINUTE_NS), float(rng.randrange(-100, 100)),
                          s=str(rng.randrange(4)))
                    for _ in range(rng.randrange(1, 30))
                ]  # fmt: skip
                if kind == "rewrite" and sent:
                    old = rng.choice(sent)[0].batch.points
                    points += [point("merge", p.timestamp_ns, p.value + 1000, **dict(p.labels)) for p in old[:3]]
                if kind == "duplicate":
                    points.append(point("merge", points[0].timestamp_ns, 5.0, **dict(points[0].labels)))
                items = [item(tenant_id, points)]
            await store.write(items)
            sent.append(items)
            if rng.random() < 0.3:
                await refresher.refresh_once()
            async with pool.acquire() as conn:
                covered += await check_contract(conn)
        while await refresher.refresh_once():
            pass
        async with pool.acquire() as conn:
            assert await check_contract(conn) == 0
            merged = await conn.fetchval("SELECT count(*) FROM ts.rollup_1m")
        assert covered > 0 and merged > 0  # both paths ran


@pytest.mark.integration
async def test_a_fast_path_batch_commits_its_rollups_with_its_points(ts_db: Any, tenant_id: str) -> None:
    async with writer_parts(ts_db, 2) as (pool, store, _):
        t0 = (time.time_ns() // HOUR_NS) * HOUR_NS - 2 * MINUTE_NS
        first = [point("fast", t0 + i * 10**9 * 20, float(i), s=str(i % 2)) for i in range(12)]
        await store.write([item(tenant_id, first)])
        late = [point("fast", t0 - 5, -3.0, s="1"), point("fast", t0 + 10**9, 9.0, s="0")]
        await store.write([item(tenant_id, late)])
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM ts.rollup_pending") == 0
            assert await check_contract(conn) == 0
            hours = await conn.fetch("SELECT bucket, count FROM ts.rollup_1h ORDER BY series_id, bucket")
        assert sum(r["count"] for r in hours) == 14


@pytest.mark.integration
async def test_fast_path_merges_racing_refresh_passes_never_lose_or_double_a_partial(
    ts_db: Any, tenant_id: str
) -> None:
    """Refresh passes recompute pending buckets while fast-path batches merge into the same buckets,
    on other connections: whichever way the row locks fall, the contract holds."""
    async with writer_parts(ts_db, 4) as (pool, store, refresher):
        t0 = (time.time_ns() // HOUR_NS - 1) * HOUR_NS
        s = 10**9

        async def write(points: list[common_pb2.Point]) -> None:
            while True:
                try:
                    await store.write([item(tenant_id, points)])
                    return
                except asyncpg.TransactionRollbackError:  # a deadlock with the pass: the writer retries
                    continue

        async def refresh() -> None:
            # A pass that loses a race rolls back: its ranges stay pending for the next one (as in `run`).
            with contextlib.suppress(asyncpg.UniqueViolationError, asyncpg.TransactionRollbackError):
                await refresher.refresh_once()

        for step in range(25):
            base = t0 + step * 10 * s
            rewrite = [point("race", base, float(step), k=str(k)) for k in range(20)]
            await write(rewrite)
            await write(rewrite)  # the same points again: conflict path, pending ranges
            fresh = [point("race", base + 1 + k, float(k), k=str(k % 20)) for k in range(40)]
            await asyncio.gather(write(fresh), refresh())
            async with pool.acquire() as conn:
                await check_contract(conn)
        while await refresher.refresh_once():
            pass
        async with pool.acquire() as conn:
            assert await check_contract(conn) == 0
            assert await conn.fetchval("SELECT sum(count) FROM ts.rollup_1m") == 25 * 60
            assert await conn.fetchval("SELECT sum(count) FROM ts.rollup_1h") == 25 * 60


@pytest.mark.integration
async def test_sums_past_the_float8_range_saturate_instead_of_failing_the_batch_or_the_pass(
    ts_db: Any, tenant_id: str
) -> None:
    """Finite values whose sum leaves the float8 range: PostgreSQL's float8 ``+`` and ``sum()``
    raise on that overflow. The writer's merge must still store the (valid, acknowledged) points,
    not refuse the batch (it would be dead-lettered), and a refresh pass over such a bucket must
    not fail (it would fail every pass after it): both give +-Infinity, as the raw sum does."""
    async with writer_parts(ts_db, 2) as (pool, store, refresher):
        t0 = (time.time_ns() // HOUR_NS - 1) * HOUR_NS
        s, big = 10**9, 1.5e308
        tiny = 5e-324  # and the smallest subnormal: float8 ``*`` and ``/`` raise on underflow to 0
        for ts in (t0, t0 + s):  # two fast-path batches into the same buckets: the merge overflows
            points = [point("huge", ts, big), point("huge", ts, -big, n="1"), point("huge", ts, tiny, n="2")]
            assert await store.write([item(tenant_id, points)]) == 3
        async with pool.acquire() as conn:
            assert await check_contract(conn) == 0
            sums = sorted(await conn.fetchval("SELECT array_agg(sum) FROM ts.rollup_1h"))
            assert sums == [-math.inf, 2 * tiny, math.inf]
        redelivered = [point("huge", t0 + s, big), point("huge", t0 + 2 * s, big), point("huge", t0 + s, -big, n="1")]
        await store.write([item(tenant_id, redelivered)])  # conflict path: the pass recomputes from raw
        assert await refresher.refresh_once() > 0
        async with pool.acquire() as conn:
            assert await check_contract(conn) == 0
            assert await conn.fetchval("SELECT count(*) FROM ts.rollup_pending") == 0
            assert sorted(await conn.fetchval("SELECT array_agg(sum) FROM ts.rollup_1m")) == [
                -math.inf,
                2 * tiny,
                math.inf,
            ]
