"""The writer against the real broker and PostgreSQL: idempotent replay, late data, crashes, poison."""

from __future__ import annotations

import time
import uuid
from typing import Any

import ingest_harness
import pytest
from aiokafka import AIOKafkaConsumer
from ingest_harness import Ingest, point
from testkit import eventually
from tsmesh.v1 import common_pb2

from tsmesh_common.config import ConfigError
from tsmesh_common.redis_keys import LATE_WRITE_SECONDS, RedisNamespace
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.series_id import series_id
from tsmesh_ingest.store import WriterHooks

pytestmark = pytest.mark.integration

# Fixtures shared by the ingest tests (no conftest.py here: it would shadow the root one).
ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest

MINUTE = 60 * 10**9


def batch(tenant_id: str, points: list[common_pb2.Point]) -> bytes:
    ids = [series_id(tenant_id, p.metric, p.labels.items()) for p in points]
    return common_pb2.PointBatch(
        tenant_id=tenant_id, points=points, series_ids=ids, accepted_at_ns=time.time_ns()
    ).SerializeToString()


async def settled(ingest: Ingest, committed_at_least: int) -> None:
    """Wait until the writer committed that many batches and the rollups caught up."""
    writer = ingest.runtime.writer
    assert writer is not None
    await eventually(lambda: writer.committed_batches >= committed_at_least)

    async def no_pending() -> bool:
        rows = await ingest.fetch("SELECT count(*) AS n FROM ts.rollup_pending")
        return bool(rows[0]["n"] == 0)

    await eventually(no_pending)


async def snapshot(ingest: Ingest) -> dict[str, list[tuple[Any, ...]]]:
    out = {}
    for table, order in (
        ("points", "series_id, ts"),
        ("rollup_1m", "series_id, bucket"),
        ("rollup_1h", "series_id, bucket"),
    ):
        rows = await ingest.fetch(f"SELECT * FROM ts.{table} ORDER BY {order}")
        out[table] = [tuple(r.values()) for r in rows]
    return out


def aligned_now() -> int:
    """A timestamp at the start of a recent minute, so a test's points share known buckets: it and
    the next two minutes fall in one hour bucket, whatever the time the test runs."""
    t0 = (time.time_ns() // MINUTE - 5) * MINUTE
    return t0 if t0 % (60 * MINUTE) <= 57 * MINUTE else t0 - 3 * MINUTE


async def test_replaying_the_same_batch_changes_neither_rows_nor_rollups(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db)
    t0 = aligned_now()
    record = batch(tenant_id, [point("replay", t0 + i * 10**9, float(i), k=str(i % 3)) for i in range(90)])
    await ingest.produce_raw(record)
    await settled(ingest, 1)
    first = await snapshot(ingest)
    assert len(first["points"]) == 90
    assert sum(r[2] for r in first["rollup_1m"]) == 90
    assert sum(r[2] for r in first["rollup_1h"]) == 90

    await ingest.produce_raw(record)
    await settled(ingest, 2)
    assert await snapshot(ingest) == first


async def test_late_and_rewritten_points_update_the_rollups(ts_db: Any, start_ingest: Any, tenant_id: str) -> None:
    ingest = await start_ingest(ts_db)
    t0 = aligned_now()
    await ingest.write(tenant_id, [point("late", t0 + 30 * 10**9, 5.0), point("late", t0 + MINUTE + 1, 7.0)])
    await settled(ingest, 1)
    await ingest.write(tenant_id, [point("late", t0 + 10**9, 1.0), point("late", t0 + 30 * 10**9, 50.0)])
    await settled(ingest, 2)

    minute = await ingest.fetch("SELECT * FROM ts.rollup_1m ORDER BY bucket")
    assert [dict(r) | {"series_id": 0} for r in minute] == [
        {"series_id": 0, "bucket": t0, "count": 2, "sum": 51.0, "min": 1.0, "max": 50.0,
         "first_ts": t0 + 10**9, "first": 1.0, "last_ts": t0 + 30 * 10**9, "last": 50.0,
         "ascending": True, "distinct_ms": True},
        {"series_id": 0, "bucket": t0 + MINUTE, "count": 1, "sum": 7.0, "min": 7.0, "max": 7.0,
         "first_ts": t0 + MINUTE + 1, "first": 7.0, "last_ts": t0 + MINUTE + 1, "last": 7.0,
         "ascending": True, "distinct_ms": True},
    ]  # fmt: skip
    hour = await ingest.fetch("SELECT count, sum, min, max, first, last, first_ts, last_ts, bucket FROM ts.rollup_1h")
    raw = await ingest.fetch(
        "SELECT count(*) AS count, sum(value) AS sum, min(value) AS min, max(value) AS max FROM ts.points"
    )
    assert [(h["count"], h["sum"], h["min"], h["max"]) for h in hour] == [
        (raw[0]["count"], raw[0]["sum"], raw[0]["min"], raw[0]["max"])
    ]
    assert hour[0]["first"] == 1.0 and hour[0]["last"] == 7.0
    assert hour[0]["bucket"] == t0 - t0 % (60 * MINUTE)


class Crash(Exception):
    """Stands for the process dying at a precise point."""


def crash_once() -> tuple[Any, list[int]]:
    calls: list[int] = []

    async def hook() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise Crash("killed")

    return hook, calls


@pytest.mark.parametrize("where", ["after_copy", "after_commit"])
async def test_a_writer_killed_before_the_offset_commit_loses_and_duplicates_nothing(
    ts_db: Any, start_ingest: Any, tenant_id: str, where: str
) -> None:
    hook, calls = crash_once()
    hooks = WriterHooks(**{where: hook})
    suffix = uuid.uuid4().hex[:8]
    env = {
        "TSMESH_KAFKA_TOPIC": f"tsmesh.points.crash-{suffix}",
        "TSMESH_KAFKA_DLQ_TOPIC": f"tsmesh.points.dlq.crash-{suffix}",
        "TSMESH_KAFKA_GROUP": f"crash-{suffix}",
    }
    first = await start_ingest(ts_db, hooks=hooks, env=env)
    t0 = aligned_now()
    points = [point("crash", t0 + i, float(i), s=str(i % 5)) for i in range(500)]
    answer = await first.write(tenant_id, points)
    assert answer.accepted == 500
    await eventually(lambda: len(calls) >= 1)
    writer_task = next(t for t in first.runtime.app._background if t.get_name() == "writer")
    await eventually(writer_task.done)  # the writer task died
    stored = await first.fetch("SELECT count(*) AS n FROM ts.points")
    assert stored[0]["n"] == (0 if where == "after_copy" else 500)

    second = await start_ingest(ts_db, env={**env, "TSMESH_INGEST_MODE": "writer"})
    await settled(second, 1)
    rows = await second.fetch(
        "SELECT count(*) AS n, count(DISTINCT (series_id, ts)) AS d, sum(value) AS s FROM ts.points"
    )
    assert (rows[0]["n"], rows[0]["d"], rows[0]["s"]) == (500, 500, float(sum(range(500))))
    rollup = await second.fetch("SELECT sum(count) AS n, sum(sum) AS s FROM ts.rollup_1m")
    assert (rollup[0]["n"], rollup[0]["s"]) == (500, float(sum(range(500))))


async def read_dlq(ingest: Ingest, expected: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        ingest.cfg.kafka.dlq_topic,
        bootstrap_servers=ingest.cfg.kafka.bootstrap,
        group_id=f"dlq-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        session_timeout_ms=2000,
        heartbeat_interval_ms=400,
        rebalance_timeout_ms=2000,
    )
    await consumer.start()
    try:
        found: list[Any] = []

        async def enough() -> bool:
            fetched = await consumer.getmany(timeout_ms=200)
            for records in fetched.values():
                found.extend(records)
            return len(found) >= expected

        await eventually(enough)
        return found
    finally:
        await consumer.stop()


async def test_poison_records_go_to_the_dlq_without_blocking_the_partition(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db)
    t0 = aligned_now()
    victim = batch("tenant-victim", [point("secret", t0, 1.0, host="h")])
    forged = common_pb2.PointBatch.FromString(victim)
    forged.tenant_id = tenant_id
    forged.points[0].value = 666.0
    await ingest.produce_raw(victim)
    await ingest.produce_raw(b"\xff\x00not protobuf")
    await ingest.produce_raw(forged.SerializeToString())
    await ingest.produce_raw(batch(tenant_id, [point("after_poison", t0, 2.0)]))

    async def good_rows() -> list[Any]:
        rows = await ingest.fetch(
            "SELECT s.tenant_id, p.value FROM ts.points p JOIN ts.series s USING (series_id) ORDER BY 2"
        )
        return rows if len(rows) == 2 else []

    rows = await eventually(good_rows)
    assert [(r["tenant_id"], r["value"]) for r in rows] == [("tenant-victim", 1.0), (tenant_id, 2.0)]
    dead = await read_dlq(ingest, 2)
    reasons = sorted(dict(r.headers)["reason"].decode() for r in dead)
    assert reasons[0].startswith("not a tsmesh.v1.PointBatch")
    assert "is not the id of its metric and labels" in reasons[1]
    assert b"\xff\x00not protobuf" in {r.value for r in dead}


async def test_in_order_appends_merge_into_the_rollup_exactly(ts_db: Any, start_ingest: Any, tenant_id: str) -> None:
    ingest = await start_ingest(ts_db)
    t0 = aligned_now()
    s = 10**9
    await ingest.write(tenant_id, [point("append", t0 + 10 * s, 3.0), point("append", t0 + 20 * s, -1.0)])
    await settled(ingest, 1)
    await ingest.write(tenant_id, [point("append", t0 + 30 * s, 8.0), point("append", t0 + 40 * s, 2.0)])
    await settled(ingest, 2)

    async def rollup() -> tuple[Any, ...]:
        rows = await ingest.fetch("SELECT count, sum, min, max, first_ts, first, last_ts, last FROM ts.rollup_1m")
        return tuple(rows[0].values())

    assert await rollup() == (4, 12.0, -1.0, 8.0, t0 + 10 * s, 3.0, t0 + 40 * s, 2.0)
    await ingest.write(tenant_id, [point("append", t0 + 40 * s, 20.0)])  # a rewrite of the last point
    await settled(ingest, 3)
    assert await rollup() == (4, 30.0, -1.0, 20.0, t0 + 10 * s, 3.0, t0 + 40 * s, 20.0)
    hour = await ingest.fetch("SELECT count, sum, min, max, first, last FROM ts.rollup_1h")
    assert tuple(hour[0].values()) == (4, 30.0, -1.0, 20.0, 3.0, 20.0)


async def test_a_commit_with_points_older_than_the_late_window_bumps_the_late_generation(
    ts_db: Any, start_ingest: Any, tenant_id: str, redis_client: Any
) -> None:
    ingest = await start_ingest(ts_db, env={"TSMESH_WRITER_LATE_WINDOW_SECONDS": "120"})
    ns = ingest.cfg.common.redis_namespace
    late_key, data_key = ns.late_generation_key(tenant_id), ns.data_generation_key(tenant_id)
    now = time.time_ns()
    await ingest.write(tenant_id, [point("lategen", now - 10 * 10**9, 1.0)])
    await settled(ingest, 1)
    first = int(await redis_client.get(data_key))
    assert first > 0
    assert await redis_client.get(late_key) is None

    await ingest.write(tenant_id, [point("lategen", now - 10 * 10**9, 2.0), point("lategen", now - 300 * 10**9, 3.0)])
    await settled(ingest, 2)
    second = int(await redis_client.get(data_key))
    late = int(await redis_client.get(late_key))
    assert second > first and late > 0

    await ingest.write(tenant_id, [point("lategen", time.time_ns(), 4.0)])
    await settled(ingest, 3)
    assert int(await redis_client.get(data_key)) > second
    assert int(await redis_client.get(late_key)) == late  # no late point: the late generation stays


def test_the_late_window_is_measured_after_the_commit_on_the_writer_clock() -> None:
    from tsmesh_ingest.store import Item
    from tsmesh_ingest.writer import Writer

    clock = [1_000 * 10**9]
    writer = Writer(
        None,  # type: ignore[arg-type]
        None,
        "dlq",
        None,  # type: ignore[arg-type]
        None,
        None,  # type: ignore[arg-type]
        namespace=RedisNamespace(),
        late_window_seconds=300,
        clock_ns=lambda: clock[0],
    )

    def item(tenant: str, *tss: int) -> Item:
        pts = [point("m", t, 1.0) for t in tss]
        return Item(tenant, common_pb2.PointBatch(tenant_id=tenant, points=pts), [0] * len(pts))

    items = [item("a", 999 * 10**9, 700 * 10**9 - 1), item("b", 700 * 10**9), item("c")]
    assert writer.late_tenants(items) == {"a"}
    clock[0] += 1
    assert writer.late_tenants(items) == {"a", "b"}
    with pytest.raises(ConfigError, match="TSMESH_WRITER_LATE_WINDOW_SECONDS"):
        IngestConfig.from_env({"TSMESH_WRITER_LATE_WINDOW_SECONDS": str(LATE_WRITE_SECONDS + 1)})
    assert IngestConfig.from_env({}).writer.late_window_s == LATE_WRITE_SECONDS
