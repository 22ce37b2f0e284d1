"""Selectors, tenant isolation, regex safety and limits; Latest, ListSeries and LabelValues."""

from __future__ import annotations

import time

import grpc
import pytest
from test_range import BASE, SECOND, request
from tsmesh.v1 import common_pb2, query_pb2
from tsq_support import HOUR_NS, MINUTE_NS, Loader, Running, query_config, start_service, stop_service

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits
from tsmesh_query.selectors import parse_selector

EQ, NE, RE, NRE = (
    common_pb2.MATCH_OP_EQUAL,
    common_pb2.MATCH_OP_NOT_EQUAL,
    common_pb2.MATCH_OP_REGEX,
    common_pb2.MATCH_OP_NOT_REGEX,
)


def sel(metric: str, *matchers: tuple[str, int, str]) -> common_pb2.Selector:
    return common_pb2.Selector(
        metric=metric, matchers=[common_pb2.LabelMatcher(name=n, op=o, value=v) for n, o, v in matchers]
    )


@pytest.fixture
async def two_tenants(loader: Loader) -> tuple[str, str]:
    mine, other = f"t-mine-{time.time_ns()}", f"t-other-{time.time_ns()}"
    for tenant, hosts in ((mine, ["web-1", "web-2", "db-1"]), (other, ["web-1", "web-9", "db-7"])):
        for i, host in enumerate(hosts):
            sid = await loader.series(tenant, "cpu", {"host": host, "dc": "eu" if i % 2 else "us"})
            await loader.points([(sid, BASE + k * MINUTE_NS, float(k + i)) for k in range(10)], pending=True)
    return mine, other


async def test_matchers_and_tenant_isolation(service: Running, two_tenants: tuple[str, str]) -> None:
    mine, _ = two_tenants
    md = service.md(mine)
    cases = {
        (): {"web-1", "web-2", "db-1"},
        (("host", EQ, "web-1"),): {"web-1"},
        (("host", NE, "web-1"),): {"web-2", "db-1"},
        (("host", RE, "web-.*"),): {"web-1", "web-2"},
        (("host", RE, "web"),): set(),  # anchored
        (("host", NRE, "web-.*"),): {"db-1"},
        (("host", RE, ".*"), ("dc", EQ, "eu")): {"web-2"},
        (("host", RE, "web-9|db-7"),): set(),  # the other tenant's hosts
        (("absent", EQ, ""),): {"web-1", "web-2", "db-1"},
    }
    for matchers, hosts in cases.items():
        listed = await service.stub.ListSeries(query_pb2.ListSeriesRequest(selector=sel("cpu", *matchers)), metadata=md)
        assert {s.labels["host"] for s in listed.series} == hosts, matchers
        latest = await service.stub.Latest(query_pb2.LatestRequest(selector=sel("cpu", *matchers)), metadata=md)
        assert {p.labels["host"] for p in latest.points} == hosts
        assert all(p.timestamp_ns == BASE + 9 * MINUTE_NS for p in latest.points)

    grouped = await service.stub.QueryRange(
        request("cpu", BASE, BASE + HOUR_NS, HOUR_NS, "count", ("dc",), "none"), metadata=md
    )
    assert {s.labels["dc"]: s.buckets[0].count for s in grouped.series} == {"us": 20, "eu": 10}
    values = await service.stub.LabelValues(query_pb2.LabelValuesRequest(label="host"), metadata=md)
    assert list(values.values) == ["db-1", "web-1", "web-2"]
    values = await service.stub.LabelValues(
        query_pb2.LabelValuesRequest(label="host", selector=sel("cpu", ("host", RE, "w.*"))), metadata=md
    )
    assert list(values.values) == ["web-1", "web-2"]
    with pytest.raises(grpc.aio.AioRpcError) as err:  # matchers are never silently dropped
        await service.stub.LabelValues(
            query_pb2.LabelValuesRequest(label="host", selector=sel("", ("host", RE, "w.*"))), metadata=md
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "selector.metric" in (err.value.details() or "")


def test_fingerprints_of_different_selectors_differ() -> None:
    limits = QueryLimits()
    a = parse_selector(sel("cpu", ("a", EQ, "b\x00c")), limits)
    b = parse_selector(sel("cpu", ("a", EQ, "b"), ("c", EQ, "")), limits)
    c = parse_selector(sel("cpua", ("b", EQ, "")), limits)
    d = parse_selector(sel("cpu", ("ab", EQ, "")), limits)
    assert len({a.fingerprint, b.fingerprint, c.fingerprint, d.fingerprint}) == 4
    assert (
        parse_selector(sel("cpu", ("a", EQ, "b")), limits).fingerprint
        == parse_selector(sel("cpu", ("a", EQ, "b")), limits).fingerprint
    )


async def test_regex_bombs_are_refused_or_harmless(service: Running, two_tenants: tuple[str, str]) -> None:
    mine, _ = two_tenants
    md = service.md(mine)
    for bomb in ("((a{100}){100}){100}", "(" * 600 + "a" + ")" * 600, "a" * 2000):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await service.stub.ListSeries(
                query_pb2.ListSeriesRequest(selector=sel("cpu", ("host", RE, bomb))), metadata=md
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "selector.matchers[0].value" in err.value.details()
    # a classic catastrophic-backtracking pattern is linear under RE2
    listed = await service.stub.ListSeries(
        query_pb2.ListSeriesRequest(selector=sel("cpu", ("host", RE, "(a*)*b|(x+x+)+y|web-1"))), metadata=md
    )
    assert [s.labels["host"] for s in listed.series] == ["web-1"]


def test_parse_selector_validates_ops_and_names() -> None:
    limits = QueryLimits()
    with pytest.raises(InvalidArgument, match=r"selector.matchers\[0\].op"):
        parse_selector(sel("m", ("a", 9, "x")), limits)
    with pytest.raises(InvalidArgument, match=r"selector.matchers\[0\].name"):
        parse_selector(sel("m", ("", EQ, "x")), limits)
    a = parse_selector(sel("m", ("a", EQ, "1"), ("b", RE, "2")), limits)
    b = parse_selector(sel("m", ("b", RE, "2"), ("a", EQ, "1")), limits)
    assert a.fingerprint == b.fingerprint


async def test_limits_are_named(ts_db, token_mint, two_tenants: tuple[str, str]) -> None:
    mine, _ = two_tenants
    running = await start_service(query_config(ts_db, limits=QueryLimits(max_series=2, max_points=5)), token_mint)
    try:
        md = running.md(mine)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.stub.QueryRange(
                request("cpu", BASE, BASE + HOUR_NS, MINUTE_NS, "avg", None, "none"), metadata=md
            )
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("tsmesh-limit", "max_series") in tuple(err.value.trailing_metadata())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await running.stub.QueryRange(
                request("cpu", BASE, BASE + HOUR_NS, 60 * SECOND, "avg", None, "none", [("host", EQ, "web-1")]),
                metadata=md,
            )
        assert ("tsmesh-limit", "max_points") in tuple(err.value.trailing_metadata())
    finally:
        await stop_service(running)
