"""End to end through a real ingest process: validation, storage, live feed, authentication."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import grpc
import ingest_harness
import pytest
from ingest_harness import eventually, point
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_ingest.series_id import series_id, to_signed

pytestmark = pytest.mark.integration

# Fixtures shared by the ingest tests (no conftest.py here: it would shadow the root one).
ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest


async def test_mixed_batch_reports_each_bad_point_and_stores_the_good_ones(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db, env={"TSMESH_INGEST_ALLOW_NON_FINITE": "false"})
    now = time.time_ns()
    points = [
        point("cpu_usage", now, 1.5, host="a"),  # 0 ok
        point("9bad", now, 1.0),  # 1 metric
        point("cpu_usage", now, float("nan"), host="a"),  # 2 value
        point("cpu_usage", now - 40 * 86_400 * 10**9, 1.0, host="a"),  # 3 too old
        point("cpu_usage", now + 3600 * 10**9, 1.0, host="a"),  # 4 future
        common_pb2.Point(metric="m", labels={"bad-name": "x"}, timestamp_ns=now, value=1),  # 5 labels
        common_pb2.Point(metric="m", labels={"v": "x" * 1025}, timestamp_ns=now, value=1),  # 6 label value
        common_pb2.Point(metric="m", labels={f"l{i}": "x" for i in range(33)}, timestamp_ns=now, value=1),  # 7
        point("a" * 201, now, 1.0),  # 8 metric too long
        point("cpu_usage", now + 1, float("inf"), host="a"),  # 9 value
        point("cpu_usage", now + 2, 2.5, host="b"),  # 10 ok
    ]
    answer = await ingest.write(tenant_id, points)
    assert (answer.accepted, answer.rejected) == (2, 9)
    by_index = {e.index: e for e in answer.errors}
    assert sorted(by_index) == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert by_index[1].field == "metric"
    assert by_index[2].field == "value" and "finite" in by_index[2].reason
    assert by_index[3].field == "timestamp_ns" and "old" in by_index[3].reason
    assert by_index[4].field == "timestamp_ns" and "future" in by_index[4].reason
    assert by_index[5].field == "labels" and "bad-name" in by_index[5].reason
    assert by_index[6].field == "labels" and "1024 bytes" in by_index[6].reason
    assert by_index[7].field == "labels" and "32" in by_index[7].reason
    assert by_index[8].field == "metric" and "200" in by_index[8].reason
    assert by_index[9].field == "value"

    sid_a = to_signed(series_id(tenant_id, "cpu_usage", [("host", "a")]))
    sid_b = to_signed(series_id(tenant_id, "cpu_usage", [("host", "b")]))

    async def stored() -> list[Any]:
        return await ingest.fetch("SELECT series_id, ts, value FROM ts.points ORDER BY ts")

    rows = await eventually(stored)
    assert [(r["series_id"], r["ts"], r["value"]) for r in rows] == [(sid_a, now, 1.5), (sid_b, now + 2, 2.5)]
    series = await ingest.fetch("SELECT series_id, tenant_id, metric, labels FROM ts.series ORDER BY labels::text")
    assert [(s["series_id"], s["tenant_id"], s["metric"], s["labels"]) for s in series] == [
        (sid_a, tenant_id, "cpu_usage", '{"host": "a"}'),
        (sid_b, tenant_id, "cpu_usage", '{"host": "b"}'),
    ]


async def test_nan_and_infinities_are_acknowledged_and_stored_by_default(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    """As Prometheus stores them (ADR 0212): whatever ingest acknowledges, the writer stores."""
    ingest = await start_ingest(ts_db)
    now = time.time_ns()
    values = [float("nan"), float("inf"), float("-inf")]
    answer = await ingest.write(tenant_id, [point("ratio", now + i, v) for i, v in enumerate(values)])
    assert (answer.accepted, answer.rejected) == (3, 0)

    async def stored() -> list[Any]:
        return await ingest.fetch("SELECT ts, value FROM ts.points ORDER BY ts")

    rows = await eventually(lambda: _at_least(stored, 3))
    assert [r["ts"] for r in rows] == [now, now + 1, now + 2]
    assert math.isnan(rows[0]["value"])
    assert [r["value"] for r in rows[1:]] == [float("inf"), float("-inf")]


async def _at_least(fetch: Any, n: int) -> list[Any]:
    rows: list[Any] = await fetch()
    return rows if len(rows) >= n else []


async def test_request_limits_refuse_the_whole_request(ts_db: Any, start_ingest: Any, tenant_id: str) -> None:
    ingest = await start_ingest(ts_db, env={"TSMESH_INGEST_MAX_POINTS_PER_REQUEST": "3", "TSMESH_INGEST_MODE": "api"})
    now = time.time_ns()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ingest.write(tenant_id, [point("m", now + i, 1.0) for i in range(4)])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 3 points" in (refused.value.details() or "")


async def test_client_stream_indexes_errors_across_messages_and_stores_everything(
    ts_db: Any, start_ingest: Any, tenant_id: str, redis_client: Any
) -> None:
    ingest = await start_ingest(ts_db)
    now = time.time_ns()

    async def requests() -> Any:
        for batch in range(5):
            pts = [point("stream_metric", now + batch * 1000 + i, float(i), shard=str(i % 7)) for i in range(100)]
            if batch == 3:
                pts[10] = point("9stream_metric", now, 1.0, shard="0")
            yield ingest_pb2.WriteRequest(points=pts)

    answer = await ingest.stub.Write(requests(), metadata=ingest.auth(tenant_id), timeout=10)
    assert (answer.accepted, answer.rejected) == (499, 1)
    assert [(e.index, e.field) for e in answer.errors] == [(310, "metric")]

    async def count() -> bool:
        rows = await ingest.fetch("SELECT count(*) AS n FROM ts.points")
        return bool(rows[0]["n"] == 499)

    await eventually(count)
    generation = await eventually(
        lambda: redis_client.get(ingest.cfg.common.redis_namespace.data_generation_key(tenant_id))
    )
    assert int(generation) >= 1


async def test_acknowledged_batches_reach_the_tenant_live_channel(
    ts_db: Any, start_ingest: Any, tenant_id: str, redis_client: Any
) -> None:
    ingest = await start_ingest(ts_db)
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(ingest.cfg.common.redis_namespace.live_channel(tenant_id))
    try:
        now = time.time_ns()
        await ingest.write(tenant_id, [point("live_metric", now, 4.0, room="x")])
        message = await eventually(lambda: pubsub.get_message(timeout=0.2), timeout=5)
        batch = common_pb2.PointBatch.FromString(message["data"])
        assert batch.tenant_id == tenant_id
        assert batch.accepted_at_ns > 0
        assert [p.value for p in batch.points] == [4.0]
        assert list(batch.series_ids) == [series_id(tenant_id, "live_metric", [("room", "x")])]
    finally:
        await pubsub.aclose()


async def test_write_needs_a_token_with_write_scope(ts_db: Any, start_ingest: Any, tenant_id: str) -> None:
    ingest = await start_ingest(ts_db, env={"TSMESH_INGEST_MODE": "api"})
    request = ingest_pb2.WriteRequest(points=[point("m", time.time_ns(), 1.0)])
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await ingest.stub.WriteBatch(request, timeout=5)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as reader:
        await ingest.stub.WriteBatch(request, metadata=ingest.auth(tenant_id, "read"), timeout=5)
    assert reader.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_tenants_writing_the_same_series_stay_apart(ts_db: Any, start_ingest: Any) -> None:
    ingest = await start_ingest(ts_db)
    now = time.time_ns()
    await asyncio.gather(
        ingest.write("tenant-red", [point("shared", now, 1.0, host="h")]),
        ingest.write("tenant-blue", [point("shared", now, 2.0, host="h")]),
    )

    async def both() -> list[Any]:
        rows = await ingest.fetch(
            "SELECT s.tenant_id, p.value FROM ts.points p JOIN ts.series s USING (series_id) ORDER BY 1"
        )
        return rows if len(rows) == 2 else []

    rows = await eventually(both)
    assert [(r["tenant_id"], r["value"]) for r in rows] == [("tenant-blue", 2.0), ("tenant-red", 1.0)]
