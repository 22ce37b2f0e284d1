"""``tsmesh_gateway.routes.influx`` mounted alone on the collaborators of an in-process gateway in
front of the fake upstreams: ``/ping``, and ``/api/v2/write``'s checks of its query parameters
(each refusal names its field) before the lines reach ingest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from gw_fakes import mounted_alone

from tsmesh_gateway.routes.influx import influx_routes

if TYPE_CHECKING:
    from conftest import Gateway


@pytest.fixture
async def routes(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with mounted_alone(influx_routes(gateway.app.state.deps), "10.9.0.2") as client:
        yield client


async def test_ping_answers_204_with_a_version_and_no_token(routes: httpx.AsyncClient) -> None:
    for answer in (await routes.get("/ping"), await routes.head("/ping")):
        assert answer.status_code == 204 and answer.headers["x-influxdb-version"].endswith("-tsmesh")


async def test_lines_are_written_under_the_callers_tenant(gateway: Gateway, routes: httpx.AsyncClient) -> None:
    answer = await routes.post(
        "/api/v2/write",
        params={"bucket": "b1", "precision": "s"},
        content=b"cpu,host=a usage=1.5 1700000000\n",
        headers=gateway.bearer("write"),
    )
    assert answer.status_code == 204, answer.text
    (stored,) = gateway.mesh.ingest.points[gateway.tenant]
    assert stored.timestamp_ns == 1_700_000_000 * 10**9 and stored.value == 1.5
    assert stored.labels["host"] == "a"


@pytest.mark.parametrize(
    ("params", "field"),
    [({}, "bucket"), ({"bucket": "x" * 257}, "bucket"), ({"bucket": "b", "precision": "h"}, "precision")],
)
async def test_bad_parameters_are_refused_naming_the_field(
    gateway: Gateway, routes: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    answer = await routes.post("/api/v2/write", params=params, content=b"m v=1 1\n", headers=gateway.bearer("write"))
    assert answer.status_code == 400 and answer.json()["details"]["field"] == field
    assert gateway.tenant not in gateway.mesh.ingest.points


async def test_writing_needs_the_write_scope(gateway: Gateway, routes: httpx.AsyncClient) -> None:
    answer = await routes.post(
        "/api/v2/write", params={"bucket": "b"}, content=b"m v=1 1\n", headers=gateway.bearer("read")
    )
    assert answer.status_code == 403
