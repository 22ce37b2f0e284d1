"""The Prom* RPCs end to end (gRPC, JWT, PostgreSQL): answers, tenant isolation, errors, limits."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
import numpy as np
import pytest
from tsmesh.v1 import query_pb2
from tsq_support import Loader, Running, query_config, start_service, stop_service

from tsmesh_common.errors import DeadlineExceeded, ResourceExhausted
from tsmesh_query.config import DatabaseConfig, QueryLimits
from tsmesh_query.promql.engine import PromEngine
from tsmesh_query.promql.evaluate import Evaluator
from tsmesh_query.promql.parse import parse_query
from tsmesh_query.promql.plan import plan_query
from tsmesh_query.promql.values import RawSeries, SampleSet, make_labels
from tsmesh_query.store import Database

BASE_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
NS_PER_MS = 1_000_000


async def load(loader: Loader, tenant: str) -> None:
    rows = []
    for host, slope in (("a", 1.0), ("b", 2.0)):
        sid = await loader.series(tenant, "up", {"host": host, "job": "api"})
        rows += [(sid, (BASE_MS + k * 15_000) * NS_PER_MS, slope * k) for k in range(240)]
    await loader.points(rows)
    await loader.refresh_rollups(sorted({r[0] for r in rows}))


def labels(series: Any) -> dict[str, str]:
    return {label.name: label.value for label in series.labels}


async def test_range_instant_scalar_and_string(service: Running, loader: Loader) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    await load(loader, tenant)
    md = service.md(tenant)
    ranged = await service.stub.PromQueryRange(
        query_pb2.PromQueryRangeRequest(
            query="sum by (job) (rate(up[5m]))", start_ms=BASE_MS + 600_000, end_ms=BASE_MS + 1_200_000, step_ms=60_000
        ),
        metadata=md,
        timeout=10,
    )
    assert ranged.result_type == "matrix"
    assert [labels(s) for s in ranged.series] == [{"job": "api"}]
    assert list(ranged.series[0].timestamps_ms) == list(range(BASE_MS + 600_000, BASE_MS + 1_200_001, 60_000))
    assert np.allclose(ranged.series[0].values, 3.0 / 15)  # slopes 1 and 2 per 15 s sample
    instant = await service.stub.PromQuery(
        query_pb2.PromQueryRequest(query='up{host="b"}', time_ms=BASE_MS + 60_000), metadata=md, timeout=10
    )
    assert instant.result_type == "vector"
    assert [(labels(s), list(s.values)) for s in instant.series] == [
        ({"__name__": "up", "host": "b", "job": "api"}, [8.0])
    ]
    scalar = await service.stub.PromQuery(query_pb2.PromQueryRequest(query="1 + 2", time_ms=BASE_MS), metadata=md)
    assert (scalar.result_type, list(scalar.series[0].values)) == ("scalar", [3.0])
    text = await service.stub.PromQuery(query_pb2.PromQueryRequest(query='"hi"', time_ms=BASE_MS), metadata=md)
    assert (text.result_type, text.string_value) == ("string", "hi")


async def test_series_and_labels_see_only_the_callers_tenant(service: Running, loader: Loader) -> None:
    tenant, other = f"t-{uuid.uuid4().hex[:10]}", f"t-{uuid.uuid4().hex[:10]}"
    await load(loader, tenant)
    await loader.series(other, "secret", {"host": "z"})
    md = service.md(tenant)
    series = await service.stub.PromSeries(query_pb2.PromSeriesRequest(match=['up{host=~"a|z"}']), metadata=md)
    assert [labels(s) for s in series.series] == [{"__name__": "up", "host": "a", "job": "api"}]
    names = await service.stub.PromLabelNames(query_pb2.PromLabelNamesRequest(), metadata=md)
    assert list(names.names) == ["__name__", "host", "job"]
    values = await service.stub.PromLabelValues(query_pb2.PromLabelValuesRequest(label="__name__"), metadata=md)
    assert list(values.values) == ["up"]
    matched = await service.stub.PromLabelValues(
        query_pb2.PromLabelValuesRequest(label="host", match=['up{host!="a"}']), metadata=md
    )
    assert list(matched.values) == ["b"]
    later = await service.stub.PromSeries(
        query_pb2.PromSeriesRequest(match=["up"], start_ms=BASE_MS + 86_400_000, end_ms=BASE_MS + 86_500_000),
        metadata=md,
    )
    assert list(later.series) == []


@pytest.mark.parametrize(
    ("query", "code", "words"),
    [
        ("sum(rate(up[5m])", grpc.StatusCode.INVALID_ARGUMENT, "unclosed left parenthesis"),
        ("nofunc(up)", grpc.StatusCode.INVALID_ARGUMENT, "unknown function"),
        ("rate(up[5x])", grpc.StatusCode.INVALID_ARGUMENT, "bad number or duration"),
        ("histogram_count(up)", grpc.StatusCode.INVALID_ARGUMENT, "native histograms are not supported"),
        ("up + on(job) up", grpc.StatusCode.FAILED_PRECONDITION, "many-to-many matching not allowed"),
    ],
)
async def test_errors_name_their_cause(service: Running, loader: Loader, query: str, code: Any, words: str) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    await load(loader, tenant)
    request = query_pb2.PromQueryRangeRequest(query=query, start_ms=BASE_MS, end_ms=BASE_MS + 600_000, step_ms=60_000)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await service.stub.PromQueryRange(request, metadata=service.md(tenant), timeout=10)
    assert caught.value.code() == code
    assert words in (caught.value.details() or "")


@pytest.mark.parametrize(
    ("limits", "limit"),
    [
        (QueryLimits(max_series=1), "max_series"),
        (QueryLimits(max_points=100), "max_points"),
        (QueryLimits(max_points=20), "series x 61 steps"),
    ],
)
async def test_limits_answer_resource_exhausted(
    ts_db: Any, token_mint: Any, loader: Loader, limits: QueryLimits, limit: str
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    await load(loader, tenant)
    running = await start_service(query_config(ts_db, limits=limits), token_mint)
    try:
        request = query_pb2.PromQueryRangeRequest(
            query="up", start_ms=BASE_MS, end_ms=BASE_MS + 3_600_000, step_ms=60_000
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await running.stub.PromQueryRange(request, metadata=running.md(tenant), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert limit in (caught.value.details() or "")
        if limits.max_series > 1:  # the connection of the abandoned read serves the next query
            small = query_pb2.PromQueryRequest(query='up{host="a"}', time_ms=BASE_MS + 60_000)
            answer = await running.stub.PromQuery(small, metadata=running.md(tenant), timeout=10)
            assert list(answer.series[0].values) == [4.0]
    finally:
        await stop_service(running)


@pytest.mark.parametrize("rollups", [False, True])
async def test_an_over_limit_read_is_refused_at_once_and_its_connection_serves_the_next(
    ts_db: Any, loader: Loader, rollups: bool
) -> None:
    """The whole (small) COPY arrives in one chunk: refusing it inside asyncpg's output left the
    connection waiting forever, and the query answered its deadline instead of max_points."""
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    await load(loader, tenant)
    db = Database(DatabaseConfig(primary_url=ts_db.dsn("tsmesh_query"), pool_max=1))
    engine = PromEngine(db, QueryLimits(max_points=100), timeout_s=5.0, rollups=rollups)
    try:
        with pytest.raises(ResourceExhausted, match="max_points"):
            await engine.query_range(tenant, "up", BASE_MS, BASE_MS + 3_600_000, 60_000)
        answer = await engine.query(tenant, 'up{host="a"}', BASE_MS + 60_000)
        assert answer.series[0].values == [4.0]
    finally:
        await db.close()


def test_an_expired_deadline_stops_evaluation() -> None:
    plan = plan_query(parse_query("sum(up)"), 0, 60_000, 15_000)
    ts = np.arange(0, 60_001, 15_000, dtype=np.int64)
    key = (("__name__", "=", "up"),)
    samples = SampleSet({key: [RawSeries(make_labels({"__name__": "up"}), ts, np.ones(len(ts)))]})
    assert Evaluator(plan, samples, time.monotonic() + 60).run() is not None
    with pytest.raises(DeadlineExceeded):
        Evaluator(plan, samples, time.monotonic() - 1).run()


def test_too_many_steps_are_refused_before_any_read() -> None:
    from tsmesh_common.errors import InvalidArgument

    with pytest.raises(InvalidArgument, match="exceeded maximum resolution"):
        plan_query(parse_query("up"), 0, 86_400_000 * 30, 1_000)


async def test_answers_are_cached_until_the_data_generation_moves(
    service: Running, loader: Loader, redis_client: Any
) -> None:
    from tsq_support import bump

    tenant = f"t-{uuid.uuid4().hex[:10]}"
    await load(loader, tenant)
    await bump(redis_client, tenant)
    request = query_pb2.PromQueryRangeRequest(
        query="max(up)", start_ms=BASE_MS + 3_600_000, end_ms=BASE_MS + 3_660_000, step_ms=60_000, timeout_ms=5_000
    )
    md = service.md(tenant)
    stats = service.components.prom.results.stats
    first = await service.stub.PromQueryRange(request, metadata=md, timeout=10)
    request.timeout_ms = 9_000
    again = await service.stub.PromQueryRange(request, metadata=md, timeout=10)
    assert again == first
    assert (stats.hits, stats.misses) == (1, 1)
    sid = await loader.series(tenant, "up", {"host": "c", "job": "api"})
    await loader.points([(sid, (BASE_MS + 3_600_000) * NS_PER_MS, 1000.0)])
    await loader.refresh_rollups([sid])
    await bump(redis_client, tenant)
    fresh = await service.stub.PromQueryRange(request, metadata=md, timeout=10)
    assert fresh.series[0].values[0] == 1000.0
    assert first.series[0].values[0] != 1000.0


def test_a_subquery_too_fine_for_the_budget_is_refused() -> None:
    from tsmesh_common.errors import ResourceExhausted

    plan = plan_query(parse_query("max_over_time(up[1d:1s])"), 0, 60_000, 15_000)
    ts = np.arange(0, 60_001, 15_000, dtype=np.int64)
    key = (("__name__", "=", "up"),)
    samples = SampleSet({key: [RawSeries(make_labels({"__name__": "up"}), ts, np.ones(len(ts)))]})
    with pytest.raises(ResourceExhausted, match="subquery"):
        Evaluator(plan, samples, time.monotonic() + 60, max_values=50_000).run()
    assert Evaluator(plan, samples, time.monotonic() + 60, max_values=200_000).run() is not None
