"""DataExportService on the real database and the real gRPC server: every raw point of the caller's
series only, CSV and JSON lines, a query's buckets, the admin scope, and memory bounded by a chunk."""

from __future__ import annotations

import csv
import io
import tracemalloc
import uuid

import grpc
import orjson
import pytest
from tsmesh.v1 import common_pb2, export_pb2, export_pb2_grpc, query_pb2
from tsq_support import MINUTE_NS, Loader, Running

pytestmark = pytest.mark.integration

BASE = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z


async def _series(loader: Loader, metric: str) -> tuple[str, list[int]]:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    a = await loader.series(tenant, metric, {"host": "a"})
    b = await loader.series(tenant, metric, {"host": "b", "dc": "x,y"})
    other = await loader.series(f"{tenant}-other", metric, {"host": "a"})
    return tenant, [a, b, other]


def _export(running: Running, tenant: str, request: export_pb2.ExportRequest, scopes: str = "admin") -> object:
    stub = export_pb2_grpc.DataExportServiceStub(running.channel)
    return stub.Export(request, metadata=running.md(tenant, scopes))


async def test_raw_export_streams_every_point_of_the_callers_series_in_bounded_memory(
    loader: Loader, service: Running
) -> None:
    metric = f"exp_{uuid.uuid4().hex[:6]}"
    tenant, (a, b, other) = await _series(loader, metric)
    count = 100_000
    await loader.points([(sid, BASE + i * 10**9, float(i)) for sid in (a, b, other) for i in range(count)])
    request = export_pb2.ExportRequest(
        format=export_pb2.EXPORT_FORMAT_JSONL,
        selector=common_pb2.Selector(metric=metric),
        start_ns=BASE,
        end_ns=BASE + count * 10**9,
    )
    rows = total_bytes = largest_chunk = 0
    last: bytes = b""
    tracemalloc.start()
    try:
        async for chunk in _export(service, tenant, request):  # type: ignore[attr-defined]
            rows += chunk.rows
            total_bytes += len(chunk.data)
            largest_chunk = max(largest_chunk, len(chunk.data))
            last = chunk.data
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 2 * count
    final = orjson.loads(last.splitlines()[-1])
    assert final["metric"] == metric and final["timestamp_ns"] == BASE + (count - 1) * 10**9
    assert total_bytes > 16 * 2**20
    # a chunk of 256 KiB plus its copy and the cursor's prefetch: a fixed bound, far below the export
    assert peak < 4 * 2**20, f"peak {peak} bytes for an export of {total_bytes} bytes"


async def test_csv_export_and_query_buckets(loader: Loader, service: Running) -> None:
    metric = f"exp_{uuid.uuid4().hex[:6]}"
    tenant, (a, b, _) = await _series(loader, metric)
    await loader.points([(sid, BASE + i * 10 * 10**9, 1.5) for sid in (a, b) for i in range(12)])
    await loader.refresh_rollups([a, b])
    raw = export_pb2.ExportRequest(
        format=export_pb2.EXPORT_FORMAT_CSV,
        selector=common_pb2.Selector(
            metric=metric, matchers=[common_pb2.LabelMatcher(name="host", op=common_pb2.MATCH_OP_EQUAL, value="b")]
        ),
        start_ns=BASE,
        end_ns=BASE + MINUTE_NS,
    )
    text = b"".join([c.data async for c in _export(service, tenant, raw)]).decode()  # type: ignore[attr-defined]
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["metric", "timestamp_ns", "value", "dc", "host"]
    assert table[1] == [metric, str(BASE), "1.5", "x,y", "b"] and len(table) == 7

    query = export_pb2.ExportRequest(
        format=export_pb2.EXPORT_FORMAT_JSONL,
        query=query_pb2.QueryRangeRequest(
            selector=common_pb2.Selector(metric=metric),
            start_ns=BASE,
            end_ns=BASE + 2 * MINUTE_NS,
            step_ns=MINUTE_NS,
            aggregation=query_pb2.AGGREGATION_COUNT,
        ),
    )
    lines = [orjson.loads(x) for c in [c async for c in _export(service, tenant, query)] for x in c.data.splitlines()]  # type: ignore[attr-defined]
    assert sorted((x["labels"]["host"], x["start_ns"], x["value"]) for x in lines) == [
        ("a", BASE, 6.0),
        ("a", BASE + MINUTE_NS, 6.0),
        ("b", BASE, 6.0),
        ("b", BASE + MINUTE_NS, 6.0),
    ]


async def test_export_needs_the_admin_scope(loader: Loader, service: Running) -> None:
    request = export_pb2.ExportRequest(
        format=export_pb2.EXPORT_FORMAT_JSONL, selector=common_pb2.Selector(metric="m"), start_ns=1, end_ns=2
    )
    for scopes in ("read", "write", "read,write"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in _export(service, "t-x", request, scopes):  # type: ignore[attr-defined]
                pass
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
