"""PromQL from the 1-minute rollup equals PromQL from raw samples, exactly (``promql/rollups.py``).

The data goes through ingest's real writer (fast-path partial merges, the conflict path's pending
ranges) and refresher, so the rollup rows and their ``ascending``/``distinct_ms`` flags are the ones
production keeps. Each query is answered by an engine reading rollups and by one reading raw only;
the answers must be identical to the last bit (``repr`` of every value, NaN included).
"""

from __future__ import annotations

import math
import random
import time
from typing import Any

import asyncpg
import pytest
from tsmesh.v1 import common_pb2

from tsmesh_ingest.partitions import PartitionManager
from tsmesh_ingest.rollups import RollupRefresher
from tsmesh_ingest.series_id import series_id, signed_array
from tsmesh_ingest.store import Item, KnownSeries, PointStore
from tsmesh_query.config import DatabaseConfig, QueryLimits
from tsmesh_query.promql.encode import Result
from tsmesh_query.promql.engine import PromEngine
from tsmesh_query.promql.fetch import fetch_samples
from tsmesh_query.promql.parse import parse_query
from tsmesh_query.promql.plan import plan_query
from tsmesh_query.promql.selection import select_series
from tsmesh_query.store import Database

TENANT = "t-rollups"
S = 1_000_000_000
MIN_MS = 60_000

# Every one of these is evaluated at whole minutes (range and instant); most read the rollup.
QUERIES = [
    "c",
    "g",
    "timestamp(g)",
    "rate(c[5m])",
    "increase(c[2m])",
    "sum by (host) (rate(c[5m]))",
    "rate(c[5m] offset 1m)",
    "rate(c[1h] @ end())",
    "delta(g[3m])",
    "delta(c[10m])",
    "count_over_time(g[1m])",
    "count_over_time(c[7m])",
    "last_over_time(g[10m])",
    "present_over_time(c[5m])",
    "g offset 2m",
    "rate(c[5m]) / ignoring(host) group_left sum(rate(c[5m]))",
    "max_over_time(rate(c[5m])[10m:1m])",  # the inner selector reads raw (a subquery)
    "rate(c[5m]) - irate(c[5m])",  # irate reads raw, so the selector does
    "avg_over_time(g[5m])",  # not exact from rollups: raw
]


def point(metric: str, ts_ns: int, value: float, **labels: str) -> common_pb2.Point:
    return common_pb2.Point(metric=metric, labels=labels, timestamp_ns=ts_ns, value=value)


def item(points: list[common_pb2.Point]) -> Item:
    ids = [series_id(TENANT, p.metric, p.labels.items()) for p in points]
    batch = common_pb2.PointBatch(tenant_id=TENANT, points=points, series_ids=ids, accepted_at_ns=time.time_ns())
    return Item(TENANT, batch, signed_array(ids), batch.SerializeToString())


def series_points(t0: int) -> dict[str, list[common_pb2.Point]]:
    """Counters (one with a reset, one sampled exactly on whole minutes), gauges (one with a NaN,
    one with two samples in one millisecond), about 2 h of each."""
    rng = random.Random(311)
    out: dict[str, list[common_pb2.Point]] = {}
    for host, reset_at in (("a", None), ("b", 300), ("m", None)):
        value, pts = rng.uniform(0, 100), []
        offset = 0 if host == "m" else rng.randrange(1, 10 * S)
        for k in range(720):
            value = 0.0 if k == reset_at else value + rng.uniform(0, 10)
            pts.append(point("c", t0 + k * 10 * S + offset, round(value, 3), host=host))
        out[f"c-{host}"] = pts
    for host in ("a", "n", "d"):
        pts = []
        for k in range(480):
            value = math.nan if host == "n" and k == 200 else round(rng.uniform(-50, 50), 2)
            pts.append(point("g", t0 + k * 15 * S + (0 if k % 4 == 0 else 3 * S), value, host=host))
        if host == "d":  # a second sample in the millisecond of another one, on a whole minute
            pts.append(point("g", t0 + 100 * 15 * S + 500, 7.0, host=host))
        out[f"g-{host}"] = pts
    return out


async def write_through_the_writer(pool: Any, t0: int) -> None:
    """In-order batches of 7 minutes (minute partials merge across batches), a late batch inside
    already-written minutes, a redelivery (the conflict path's pending ranges), a refresh of all
    but the last pending range."""
    store = PointStore(pool, PartitionManager(), KnownSeries())
    data = series_points(t0)
    for lo in range(0, 120 * 60, 7 * 60):
        batch = [p for pts in data.values() for p in pts if lo * S <= p.timestamp_ns - t0 < (lo + 7 * 60) * S]
        if batch:
            await store.write([item(batch)])
    late = [point("c", t0 + 2000 * S + 5 * S + 1, 1e6, host="late")]  # between two samples, below both
    late += [point("c", t0 + k * 10 * S, 2e6 + k, host="late") for k in range(200, 400)]
    await store.write([item(late[1:])])
    await store.write([item(late[:1])])  # lands inside a minute already merged: flags go false
    await store.write([item(data["c-a"][100:130])])  # a redelivery: pending ranges, recomputed below
    await RollupRefresher(pool).refresh_once()
    rewrites = [point("g", p.timestamp_ns, p.value + 1000, host="a") for p in data["g-a"][300:310]]
    await store.write([item(rewrites)])  # left pending (its rollup rows are stale): read raw


def same(a: Result, b: Result) -> bool:
    return a.result_type == b.result_type and repr(a.series) == repr(b.series) and a.text == b.text


@pytest.mark.integration
async def test_rollup_answers_equal_raw_answers_exactly(ts_db: Any) -> None:
    t0 = (time.time_ns() // (3600 * S) - 3) * 3600 * S
    pool = await asyncpg.create_pool(ts_db.dsn("tsmesh_ingest"), min_size=1, max_size=2)
    try:
        async with pool.acquire() as conn:
            await PartitionManager().ensure_window(conn, 1, 1)
        await write_through_the_writer(pool, t0)
    finally:
        await pool.close()
    db = Database(DatabaseConfig(primary_url=ts_db.dsn("tsmesh_query")))
    rollups, raw = PromEngine(db, QueryLimits()), PromEngine(db, QueryLimits(), rollups=False)
    start, end = t0 // 10**6 + 10 * MIN_MS, t0 // 10**6 + 115 * MIN_MS
    from_rollup = 0
    try:
        for query in QUERIES:
            for step in (MIN_MS, 5 * MIN_MS):
                got = await rollups.query_range(TENANT, query, start, end, step)
                want = await raw.query_range(TENANT, query, start, end, step)
                assert want.series, query  # the query reads data
                assert same(got, want), f"{query} step {step}: rollups {got} raw {want}"
            for at in (start, start + 37 * MIN_MS, end):
                assert same(await rollups.query(TENANT, query, at), await raw.query(TENANT, query, at)), (query, at)
            from_rollup += await series_read_from_rollups(db, query, start, end)
    finally:
        await db.close()
    assert from_rollup >= 25  # the rollup path did answer (31 series over the exact selectors here)


async def series_read_from_rollups(db: Database, query: str, start: int, end: int) -> int:
    plan = plan_query(parse_query(query), start, end, MIN_MS)

    async def read(conn: asyncpg.Connection, timeout: float) -> int:
        selection = await select_series(conn, TENANT, plan, QueryLimits())
        samples = await fetch_samples(conn, selection, QueryLimits())
        return sum(s.weights is not None for series in samples.by_selector.values() for s in series)

    return int(await db.read(read, snapshot=True))


def test_only_exact_uses_read_rollups() -> None:
    def picked(query: str, start: int = 600_000, end: int = 1_200_000, step: int = MIN_MS) -> dict[Any, bool]:
        return plan_query(parse_query(query), start, end, step).rollups

    c, g = (("__name__", "=", "c"),), (("__name__", "=", "g"),)
    assert picked("rate(c[5m])") == {c: True}
    assert picked("delta(g[5m]) + g") == {g: False}
    assert picked("rate(c[5m]) + count_over_time(c[2m])") == {c: True}
    assert picked("rate(c[90s])") == {}  # range not whole minutes
    assert picked("rate(c[5m])", start=600_500) == {}  # steps not on whole minutes
    assert picked("rate(c[5m])", step=90_000) == {}
    assert picked("rate(c[5m] offset 30s)") == {}
    assert picked("rate(c[5m] @ 1200)") == {c: True}
    assert picked("rate(c[5m] @ 1200.5)") == {}
    assert picked("rate(c[5m]) - irate(c[5m])") == {}
    assert picked("avg_over_time(g[5m])") == {}
    assert picked("max_over_time(g[10m:1m])") == {}
    assert picked("rate(c[5m])", start=600_000, end=600_000, step=1) == {c: True}  # instant, whole minute
