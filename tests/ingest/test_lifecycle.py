"""The data lifecycle service on the real database: retention get/set (read by the next pass), cardinality,
deletion (rollups equal to a recompute from raw, another tenant untouched)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import ingest_harness
import pytest
from testkit import fresh_namespace
from tsmesh.v1 import common_pb2, lifecycle_pb2

from tsmesh_common.context import Principal, principal_var
from tsmesh_common.errors import InvalidArgument, PermissionDenied
from tsmesh_ingest.lifecycle import LifecycleServicer
from tsmesh_ingest.limits import StaticLimits, TenantLimits
from tsmesh_ingest.partitions import DAY_NS, PartitionManager
from tsmesh_ingest.retention import Retention, RetentionDays
from tsmesh_ingest.rollups import RollupRefresher

pytestmark = pytest.mark.integration

ts_db = ingest_harness.ts_db
DEFAULTS = RetentionDays(raw=7, rollup_1m=30, rollup_1h=365)
NS = fresh_namespace()


def as_caller(tenant_id: str, *scopes: str) -> None:
    principal_var.set(Principal(tenant_id, "test", frozenset(scopes), None, "tok", "api_token"))


@pytest.fixture
async def pool(ts_db: Any) -> AsyncIterator[Any]:
    created = await asyncpg.create_pool(ts_db.dsn("tsmesh_ingest"), min_size=1, max_size=2)
    yield created
    await created.close()


@pytest.fixture
def servicer(pool: Any, redis_client: Any) -> LifecycleServicer:
    limits = StaticLimits(TenantLimits(), {"small": TenantLimits(max_active_series=50)})
    return LifecycleServicer(pool, DEFAULTS, limits, redis_client, NS)


async def test_retention_set_takes_effect_at_the_next_pass(pool: Any) -> None:
    now = time.time_ns()
    async with pool.acquire() as conn:
        await PartitionManager().ensure_window(conn, past_days=8, ahead_days=1)
        await conn.execute(
            "INSERT INTO ts.series (series_id, tenant_id, metric, labels) "
            "VALUES (1, 'a', 'm', '{}'), (2, 'b', 'm', '{}')"
        )
        for sid in (1, 2):
            await conn.executemany(
                "INSERT INTO ts.points VALUES ($1, $2, 1.0)", [(sid, now - 3 * DAY_NS), (sid, now - DAY_NS // 2)]
            )
    audit = RecordingAudit()
    servicer = LifecycleServicer(pool, DEFAULTS, StaticLimits(TenantLimits()), None, NS, audit=audit)
    as_caller("a", "admin")
    before = await servicer.GetRetention(lifecycle_pb2.GetRetentionRequest(), None)
    assert before.tenant.raw_days == 0 and before.defaults.raw_days == 7
    retention = Retention(pool, PartitionManager(), DEFAULTS)
    await retention.run_once(now)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ts.points") == 4

    answer = await servicer.SetRetention(lifecycle_pb2.SetRetentionRequest(raw_days=2), None)
    assert (answer.tenant.raw_days, answer.tenant.rollup_1m_days) == (2, 0)
    assert audit.events == [
        ("set_retention", "changed", "SetRetention: raw_days=2, rollup_1m_days=default, rollup_1h_days=default")
    ]
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ts.points") == 4  # nothing deleted by the call itself
    await retention.run_once(now)
    async with pool.acquire() as conn:
        left = await conn.fetch("SELECT series_id, ts FROM ts.points ORDER BY 1, 2")
    assert [(r["series_id"], r["ts"]) for r in left] == [
        (1, now - DAY_NS // 2),
        (2, now - 3 * DAY_NS),
        (2, now - DAY_NS // 2),
    ]

    again = await servicer.SetRetention(lifecycle_pb2.SetRetentionRequest(rollup_1h_days=400), None)
    assert (again.tenant.raw_days, again.tenant.rollup_1h_days) == (2, 400)
    reset = await servicer.SetRetention(lifecycle_pb2.SetRetentionRequest(raw_days=0), None)
    assert (reset.tenant.raw_days, reset.tenant.rollup_1h_days) == (0, 400)
    with pytest.raises(InvalidArgument):
        await servicer.SetRetention(lifecycle_pb2.SetRetentionRequest(raw_days=-1), None)
    as_caller("b", "admin")
    assert (await servicer.GetRetention(lifecycle_pb2.GetRetentionRequest(), None)).tenant.rollup_1h_days == 0


async def test_lifecycle_needs_the_admin_scope(servicer: LifecycleServicer) -> None:
    for scopes in (("read",), ("write",), ("read", "write")):
        as_caller("a", *scopes)
        with pytest.raises(PermissionDenied):
            await servicer.GetRetention(lifecycle_pb2.GetRetentionRequest(), None)
        with pytest.raises(PermissionDenied):
            await servicer.SetRetention(lifecycle_pb2.SetRetentionRequest(raw_days=1), None)
        with pytest.raises(PermissionDenied):
            await servicer.GetCardinality(lifecycle_pb2.GetCardinalityRequest(), None)


async def test_cardinality_counts_the_callers_series_only(
    pool: Any, servicer: LifecycleServicer, redis_client: Any
) -> None:
    rows = [(i, "small", "cpu", f'{{"host": "h{i}", "dc": "d{i % 2}"}}') for i in range(1, 7)]
    rows += [(7, "small", "mem", '{"host": "h1"}'), (8, "other", "cpu", '{"host": "x", "pod": "p"}')]
    async with pool.acquire() as conn:
        await conn.executemany(
            "INSERT INTO ts.series (series_id, tenant_id, metric, labels) VALUES ($1, $2, $3, $4)", rows
        )
    key = NS.active_series_key("small")
    await redis_client.delete(key)
    await redis_client.zadd(key, {"1": time.time(), "2": time.time(), "3": time.time() - 7200})
    as_caller("small", "admin")
    answer = await servicer.GetCardinality(lifecycle_pb2.GetCardinalityRequest(limit=5), None)
    await redis_client.delete(key)
    assert [(m.metric, m.series) for m in answer.series_per_metric] == [("cpu", 6), ("mem", 1)]
    assert [(x.label, x.values) for x in answer.top_labels] == [("host", 6), ("dc", 2)]
    assert (answer.total_series, answer.active_series, answer.max_active_series) == (7, 2, 50)


class RecordingAudit:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []

    def report(self, authorization: str, action: str, outcome: str, detail: str, client_address: str = "") -> None:
        self.events.append((action, outcome, detail))


ROLLUPS = "SELECT '{t}' AS t, series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last FROM ts.{t}"


async def _rollups(conn: Any) -> list[tuple[Any, ...]]:
    rows = await conn.fetch(
        f"{ROLLUPS.format(t='rollup_1m')} UNION ALL {ROLLUPS.format(t='rollup_1h')} ORDER BY 1, 2, 3"
    )
    return [tuple(r) for r in rows]


async def _recompute_all(pool: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute("TRUNCATE ts.rollup_1m, ts.rollup_1h")
        await conn.execute(
            "INSERT INTO ts.rollup_pending (series_id, lo, hi) SELECT series_id, min(ts), max(ts) FROM ts.points "
            "GROUP BY series_id"
        )
    while await RollupRefresher(pool).refresh_once():
        pass


async def test_delete_across_rollup_boundaries_leaves_rollups_equal_to_a_recompute(
    pool: Any, redis_client: Any
) -> None:
    hour = 3600 * 10**9
    base = (time.time_ns() // hour - 3) * hour  # three whole hours ago, on an hour boundary
    series = [
        (1, "a", "cpu", '{"host": "x"}'),
        (2, "a", "cpu", '{"host": "y"}'),
        (3, "b", "cpu", '{"host": "x"}'),  # another tenant, same metric and labels
    ]
    async with pool.acquire() as conn:
        await PartitionManager().ensure_window(conn, past_days=1, ahead_days=1)
        await conn.executemany(
            "INSERT INTO ts.series (series_id, tenant_id, metric, labels) VALUES ($1, $2, $3, $4)", series
        )
        rows = [(sid, base + i * 7 * 10**9, float(i % 13)) for sid in (1, 2, 3) for i in range(3 * 3600 // 7)]
        await conn.executemany("INSERT INTO ts.points VALUES ($1, $2, $3)", rows)
    await _recompute_all(pool)
    async with pool.acquire() as conn:
        other_before = await conn.fetch("SELECT * FROM ts.points WHERE series_id = 3 ORDER BY ts")
        other_rollups = [r for r in await _rollups(conn) if r[1] == 3]

    audit = RecordingAudit()
    servicer = LifecycleServicer(pool, DEFAULTS, StaticLimits(TenantLimits()), redis_client, NS, audit=audit)
    start, end = base + hour - 90 * 10**9 + 3, base + 2 * hour + 30 * 10**9  # mid-minute to mid-minute, over 1h edges
    as_caller("a", "admin")
    selector = common_pb2.Selector(metric="cpu", matchers=[common_pb2.LabelMatcher(name="host", op=1, value="x")])
    data_key, late_key = NS.data_generation_key("a"), NS.late_generation_key("a")
    before = [await redis_client.get(data_key), await redis_client.get(late_key)]
    answer = await servicer.DeleteSeries(
        lifecycle_pb2.DeleteSeriesRequest(selector=selector, start_ns=start, end_ns=end), None
    )
    expected = sum(1 for sid, ts, _ in rows if sid == 1 and start <= ts < end)
    assert (answer.series, answer.points_deleted) == (1, expected)
    assert [await redis_client.get(data_key), await redis_client.get(late_key)] != before
    assert audit.events and audit.events[0][0] == "delete_series" and f"{expected} points" in audit.events[0][2]

    async with pool.acquire() as conn:
        left = await conn.fetchval(
            "SELECT count(*) FROM ts.points WHERE series_id = 1 AND ts >= $1 AND ts < $2", start, end
        )
        kept_y = await conn.fetchval("SELECT count(*) FROM ts.points WHERE series_id = 2")
        after = await _rollups(conn)
        other_after = await conn.fetch("SELECT * FROM ts.points WHERE series_id = 3 ORDER BY ts")
    assert left == 0 and kept_y == 3 * 3600 // 7
    assert other_after == other_before
    assert [r for r in after if r[1] == 3] == other_rollups
    await _recompute_all(pool)
    async with pool.acquire() as conn:
        assert after == await _rollups(conn)

    as_caller("b", "admin")
    nothing = await servicer.DeleteSeries(
        lifecycle_pb2.DeleteSeriesRequest(
            selector=common_pb2.Selector(
                metric="cpu", matchers=[common_pb2.LabelMatcher(name="host", op=1, value="y")]
            ),
            start_ns=base,
            end_ns=base + 3 * hour,
        ),
        None,
    )
    assert (nothing.series, nothing.points_deleted) == (0, 0)
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ts.points WHERE series_id = 2") == 3 * 3600 // 7
