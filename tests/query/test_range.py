"""QueryRange end to end (gRPC, real PostgreSQL and Redis) against a brute-force reference."""

from __future__ import annotations

import math
import uuid

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tsmesh.v1 import common_pb2, query_pb2
from tsq_reference import RawPoint, reference
from tsq_support import HOUR_NS, MINUTE_NS, Loader, Running

BASE = 1_704_067_200 * 1_000_000_000  # 2024-01-01T00:00:00Z: old enough to be immutable
SECOND = 1_000_000_000
AGGS = {
    v.name.removeprefix("AGGREGATION_").lower(): v.number for v in query_pb2.Aggregation.DESCRIPTOR.values if v.number
}
FILLS = {v.name.removeprefix("FILL_").lower(): v.number for v in query_pb2.Fill.DESCRIPTOR.values if v.number}
LABEL_SETS = [
    {"host": "a", "dc": "x"},
    {"host": "b", "dc": "x"},
    {"host": "c", "dc": "y"},
    {"host": "d"},
]


def request(metric: str, start: int, end: int, step: int, agg: str, group_by, fill: str, matchers=()):
    matchers = [
        m if isinstance(m, common_pb2.LabelMatcher) else common_pb2.LabelMatcher(name=m[0], op=m[1], value=m[2])
        for m in matchers
    ]
    return query_pb2.QueryRangeRequest(
        selector=common_pb2.Selector(metric=metric, matchers=list(matchers)),
        start_ns=start,
        end_ns=end,
        step_ns=step,
        aggregation=AGGS[agg],
        group_by=list(group_by or ()),
        fill=FILLS[fill],
    )


def as_rows(response: query_pb2.QueryRangeResponse):
    return [
        (
            dict(s.labels),
            [(b.start_ns, b.value if b.HasField("value") else None, b.count) for b in s.buckets],
        )
        for s in response.series
    ]


def assert_same(actual, expected) -> None:
    assert [labels for labels, _ in actual] == [labels for labels, _ in expected]
    for (_, got), (_, want) in zip(actual, expected, strict=True):
        assert [(b, c) for b, _, c in got] == [(b, c) for b, _, c in want]
        for (_, gv, _), (_, wv, _) in zip(got, want, strict=True):
            if wv is None:
                assert gv is None
            else:
                assert gv is not None and math.isclose(gv, wv, rel_tol=1e-9, abs_tol=1e-9)


async def load(loader: Loader, tenant: str, metric: str, spec, rollup_mode: str) -> list[RawPoint]:
    """Write random points; rollups refreshed for all, none or the first half (the rest pending)."""
    raw: list[RawPoint] = []
    ids: list[int] = []
    for labels, offsets in spec:
        sid = await loader.series(tenant, metric, labels)
        ids.append(sid)
        raw += [RawPoint(sid, labels, BASE + off * SECOND, val / 4) for off, val in offsets.items()]
    if rollup_mode == "none":
        await loader.points([(p.series_id, p.ts, p.value) for p in raw], pending=True)
        return raw
    half = raw[: len(raw) // 2] if rollup_mode == "partial" else raw
    await loader.points([(p.series_id, p.ts, p.value) for p in half])
    await loader.refresh_rollups(ids)
    rest = raw[len(half) :]
    await loader.points([(p.series_id, p.ts, p.value) for p in rest], pending=True)
    return raw


series_spec = st.lists(
    st.tuples(
        st.sampled_from(LABEL_SETS),
        st.dictionaries(st.integers(0, 3 * 3600 - 1), st.integers(-4000, 4000), min_size=1, max_size=40),
    ),
    min_size=1,
    max_size=4,
    unique_by=lambda t: tuple(sorted(t[0].items())),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    spec=series_spec,
    agg=st.sampled_from(sorted(AGGS)),
    fill=st.sampled_from(sorted(FILLS)),
    group_by=st.sampled_from([None, ("dc",), ("host",), ("dc", "host"), ("absent",)]),
    step_s=st.sampled_from([30, 60, 300, 420, 3600]),
    start_s=st.sampled_from([0, 60, 17, 3600]),
    length_s=st.sampled_from([3 * 3600, 7200, 5400 + 13]),
    rollup_mode=st.sampled_from(["all", "none", "partial"]),
)
async def test_every_aggregation_and_fill_matches_reference(
    service: Running, loader: Loader, spec, agg, fill, group_by, step_s, start_s, length_s, rollup_mode
) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    raw = await load(loader, tenant, "cpu", spec, rollup_mode)
    start, end, step = BASE + start_s * SECOND, BASE + (start_s + length_s) * SECOND, step_s * SECOND
    response = await service.stub.QueryRange(
        request("cpu", start, end, step, agg, group_by, fill), metadata=service.md(tenant), timeout=10
    )
    assert_same(as_rows(response), reference(raw, start, end, step, agg, group_by, fill))
    again = await service.stub.QueryRange(
        request("cpu", start, end, step, agg, group_by, fill), metadata=service.md(tenant), timeout=10
    )
    assert again == response


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=series_spec, agg=st.sampled_from(sorted(AGGS)), step_s=st.sampled_from([60, 600, 3600, 7200]))
async def test_rollup_served_equals_raw_served(service: Running, loader: Loader, spec, agg, step_s) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    raw = await load(loader, tenant, "mem", spec, "partial" if len(spec) % 2 else "all")
    start, end, step = BASE, BASE + 4 * HOUR_NS, step_s * SECOND
    engine = service.components.engine
    from tsmesh_query.plan import parse_range

    query = parse_range(request("mem", start, end, step, agg, None, "none"), service.components.engine._limits)
    rolled = query_pb2.QueryRangeResponse.FromString(await engine.query_range(tenant, query))
    plain = query_pb2.QueryRangeResponse.FromString(
        await engine.query_range(tenant, query, max_resolution=query_pb2.RESOLUTION_RAW)
    )
    assert rolled.resolution == (query_pb2.RESOLUTION_1H if step_s % 3600 == 0 else query_pb2.RESOLUTION_1M)
    assert plain.resolution == query_pb2.RESOLUTION_RAW
    assert_same(as_rows(rolled), as_rows(plain))
    assert_same(as_rows(rolled), reference(raw, start, end, step, agg, None, "none"))


async def test_bad_requests_name_the_field(service: Running) -> None:
    md = service.md("t-bad")
    cases = [
        (request("", 0, 10, 1, "avg", None, "none"), "selector.metric"),
        (request("m", 0, 10, 0, "avg", None, "none"), "step_ns"),
        (request("m", 10, 10, 1, "avg", None, "none"), "end_ns"),
        (request("m", 0, 10**15, 1, "avg", None, "none"), "step_ns"),
        (
            request("m", 0, 10, 1, "avg", None, "none", [common_pb2.LabelMatcher(name="a", op=3, value="(")]),
            "selector.matchers[0].value",
        ),
    ]
    for req, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await service.stub.QueryRange(req, metadata=md, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(field)
    raw = service.channel.unary_unary("/tsmesh.v1.QueryService/QueryRange")  # bytes in, bytes out
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await raw(b"\x0a\xff", metadata=md, timeout=5)  # a truncated field: not a QueryRangeRequest
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("request")


async def test_requires_read_scope_and_a_token(service: Running) -> None:
    req = request("m", 0, MINUTE_NS, MINUTE_NS, "avg", None, "none")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await service.stub.QueryRange(req, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await service.stub.QueryRange(req, metadata=service.md("t-x", "write"), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize("group_by", [None, ("dc",)])
async def test_large_runs_split_across_connections_give_the_same_answer(
    service: Running, loader: Loader, monkeypatch: pytest.MonkeyPatch, group_by
) -> None:
    import random

    from tsmesh_query import engine as engine_module

    rng = random.Random(7)
    spec = [(labels, {rng.randrange(3 * 3600): rng.randrange(-4000, 4000) for _ in range(60)}) for labels in LABEL_SETS]
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    raw = await load(loader, tenant, "split", spec, "partial")  # pending ranges overlay part of the rollups
    engine = service.components.engine
    reads = 0
    read = engine._db.read

    async def counting(fn, **kwargs):
        nonlocal reads
        reads += 1
        return await read(fn, **kwargs)

    monkeypatch.setattr(engine._db, "read", counting)
    monkeypatch.setattr(engine_module, "PARALLEL_MIN_ROWS", 1)
    start, end = BASE, BASE + 3 * HOUR_NS
    for step, agg in ((60 * SECOND, "avg"), (3600 * SECOND, "last"), (30 * SECOND, "max")):
        before = reads
        response = await service.stub.QueryRange(
            request("split", start, end, step, agg, group_by, "none"), metadata=service.md(tenant), timeout=10
        )
        assert reads - before > 2  # series resolution, then the pieces on their own connections
        assert_same(as_rows(response), reference(raw, start, end, step, agg, group_by, "none"))
