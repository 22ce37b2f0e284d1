"""``tsmesh_gateway.routes.data`` mounted alone (no fast path, no middleware) on the per-worker
collaborators of an in-process gateway in front of the fake upstreams: ``/v1/write`` reaches ingest
under the caller's tenant, and the query routes answer through the query cache for each method."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from gw_fakes import mounted_alone

from tsmesh_gateway.routes.data import query_routes

if TYPE_CHECKING:
    from conftest import Gateway

RANGE = {"selector": {"metric": "cpu"}, "start_ns": 0, "end_ns": 10**12, "step_ns": 10**9}


@pytest.fixture
async def routes(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with mounted_alone(query_routes(gateway.app.state.deps), "10.9.0.1") as client:
        yield client


async def test_the_module_mounts_write_and_every_cached_route(gateway: Gateway) -> None:
    mounted = {(route.path, method) for route in query_routes(gateway.app.state.deps) for method in route.methods or ()}
    assert ("/v1/write", "POST") in mounted
    assert {("/v1/query/range", "GET"), ("/v1/query/range", "POST"), ("/v1/query/range", "HEAD")} <= mounted
    assert {("/v1/query/latest", "POST"), ("/v1/series", "POST"), ("/v1/labels/values", "POST")} <= mounted


async def test_a_write_reaches_ingest_under_the_callers_tenant(gateway: Gateway, routes: httpx.AsyncClient) -> None:
    body = {"points": [{"metric": "m", "labels": {"h": "a"}, "timestamp_ns": 5, "value": 2.5}]}
    answer = await routes.post("/v1/write", json=body, headers=gateway.bearer("write"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == 1
    (stored,) = gateway.mesh.ingest.points[gateway.tenant]
    assert (stored.metric, dict(stored.labels), stored.timestamp_ns, stored.value) == ("m", {"h": "a"}, 5, 2.5)


async def test_a_write_needs_the_write_scope(gateway: Gateway, routes: httpx.AsyncClient) -> None:
    body = {"points": [{"metric": "m", "timestamp_ns": 5, "value": 1}]}
    assert (await routes.post("/v1/write", json=body)).status_code == 401
    assert (await routes.post("/v1/write", json=body, headers=gateway.bearer("read"))).status_code == 403
    assert gateway.tenant not in gateway.mesh.ingest.points


async def test_a_query_is_cached_and_get_head_and_post_answer_alike(
    gateway: Gateway, routes: httpx.AsyncClient
) -> None:
    auth = gateway.bearer("read")
    first = await routes.post("/v1/query/range", json=RANGE, headers=auth)
    assert first.status_code == 200 and first.headers["x-cache"] == "miss", first.text
    assert first.json()["series"][0]["labels"] == {"tenant": gateway.tenant}
    again = await routes.post("/v1/query/range", json=RANGE, headers=auth)
    assert again.headers["x-cache"] == "hit" and again.json() == first.json()
    query = {"metric": "cpu", "start_ns": "0", "end_ns": str(10**12), "step_ns": str(10**9)}
    got = await routes.get("/v1/query/range", params=query, headers=auth)
    assert got.status_code == 200 and got.headers["x-cache"] == "miss"  # a key of its own
    assert got.json()["series"][0]["labels"] == first.json()["series"][0]["labels"]
    head = await routes.head("/v1/query/range", params=query, headers=auth)
    assert head.status_code == 200 and head.headers["x-cache"] == "hit" and head.content == b""


async def test_an_upstream_error_is_the_json_error(gateway: Gateway, routes: httpx.AsyncClient) -> None:
    missing = {**RANGE, "selector": {"metric": "missing"}}
    answer = await routes.post("/v1/query/range", json=missing, headers=gateway.bearer("read"))
    assert answer.status_code == 404 and answer.json()["code"] == "NOT_FOUND"
    bad = await routes.post("/v1/query/range", json={**RANGE, "start_ns": "soon"}, headers=gateway.bearer("read"))
    assert bad.status_code == 400 and "start_ns" in bad.text
