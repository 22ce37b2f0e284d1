"""Review fixes of ADR 0404 (now ADRs 0464, 0461, 0466): the per-address budget is spent before
authentication, refused credentials are remembered briefly (only those that cannot turn valid),
and the micro-cache is bounded in bytes; a slow request body is answered 408."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from gw_fakes import unknown_api_token
from prometheus_client import REGISTRY

from tsmesh_common.config import ConfigError
from tsmesh_common.context import Principal
from tsmesh_gateway.config import GatewayConfig
from tsmesh_gateway.microcache import ENTRY_OVERHEAD, MicroCache

RANGE = {"selector": {"metric": "cpu"}, "start_ns": 0, "end_ns": 10**12}


class CountingIntrospection:
    """Wraps the fakes' introspection and counts the calls that reach "auth"."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.calls = 0

    async def introspect(self, token: str) -> Principal | None:
        self.calls += 1
        return await self.inner(token)


@pytest.fixture
def introspection(mesh, monkeypatch) -> CountingIntrospection:
    counting = CountingIntrospection(mesh.api.introspect)
    monkeypatch.setattr(mesh.api, "introspect", counting.introspect)
    return counting


@pytest.mark.parametrize(
    ("path", "route_class"), [("/v1/query/range", "query"), ("/v1/write", "write")], ids=["fast-path", "starlette"]
)
async def test_a_bad_token_flood_is_refused_per_address_before_reaching_auth(
    gateway_factory, introspection, path: str, route_class: str
) -> None:
    gw = await gateway_factory(**{f"TSMESH_GATEWAY_LIMIT_{route_class.upper()}_PER_ADDRESS": "0.01:2"})
    statuses = []
    for _ in range(6):  # a different unknown token each time: the negative cache cannot help
        answer = await gw.client.post(path, json=RANGE, headers={"authorization": f"Bearer {unknown_api_token()}"})
        statuses.append(answer.status_code)
    assert statuses == [401, 401, 429, 429, 429, 429]
    assert introspection.calls == 2
    assert answer.json()["details"]["limit"] == f"{route_class}_per_address"
    assert int(answer.headers["retry-after"]) >= 1


async def test_an_unknown_api_token_is_checked_once_then_refused_from_the_negative_cache(
    gateway, introspection
) -> None:
    token = unknown_api_token()
    before = REGISTRY.get_sample_value("tsmesh_gateway_auth_refusals_cached_total") or 0.0
    for _ in range(5):
        answer = await gateway.client.post("/v1/query/range", json=RANGE, headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 401 and answer.json()["code"] == "UNAUTHENTICATED"
    assert introspection.calls == 1
    assert REGISTRY.get_sample_value("tsmesh_gateway_auth_refusals_cached_total") == before + 4
    # a token created a moment ago is a new string: it works at once
    created, _ = gateway.mesh.api.mint(gateway.tenant, "read")
    ok = await gateway.client.post("/v1/query/range", json=RANGE, headers={"authorization": f"Bearer {created}"})
    assert ok.status_code == 200, ok.text


class StaticGenerations:
    async def read(self, tenant_id: str) -> bytes | None:
        return b"1"


def _evictions() -> float:
    return REGISTRY.get_sample_value("tsmesh_gateway_cache_evictions_total") or 0.0


async def test_micro_cache_is_bounded_in_bytes_and_counts_evictions() -> None:
    entry = 1000 + 16 + 1 + ENTRY_OVERHEAD  # body, key, tenant, bookkeeping
    budget = 8 * entry
    cache = MicroCache(StaticGenerations(), ttl=60.0, max_bytes=budget)  # type: ignore[arg-type]
    assert await cache.generation("t") == 1
    before = _evictions()
    keys = [bytes([i]) * 16 for i in range(10)]
    for key in keys[:8]:
        cache.put("t", key, 1, b"x" * 1000)
    assert cache.size_bytes == budget and _evictions() == before
    assert cache.get("t", keys[0], 1) is not None  # used: the least recently used is now keys[1]
    cache.put("t", keys[8], 1, b"y" * 1000)
    assert cache.size_bytes <= budget and _evictions() == before + 1
    assert cache.get("t", keys[1], 1) is None
    assert cache.get("t", keys[0], 1) == b"x" * 1000
    cache.put("t", keys[8], 1, b"z" * 1000)  # replacing an answer evicts nothing
    assert cache.size_bytes <= budget and _evictions() == before + 1
    cache.put("t", keys[9], 1, b"w" * (budget // 8))  # larger than an eighth of the budget: not kept
    assert cache.get("t", keys[9], 1) is None and _evictions() == before + 1
    assert cache.get("t", keys[8], 1) == b"z" * 1000


def test_the_old_entry_bound_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="TSMESH_GATEWAY_CACHE_MAX_BYTES"):
        GatewayConfig.from_env({"TSMESH_GATEWAY_CACHE_ENTRIES": "10000"})
    assert GatewayConfig.from_env({"TSMESH_GATEWAY_CACHE_MAX_BYTES": "1048576"}).cache_max_bytes == 1048576


async def test_slow_request_body_is_answered_408(gateway_factory) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_BODY_TIMEOUT_SECONDS="0.3")
    token = gw.bearer()["authorization"].encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/write",
        "raw_path": b"/v1/write",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"authorization", token), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5),
        "server": ("127.0.0.1", 80),
    }
    sent: list[dict] = []
    chunks = [{"type": "http.request", "body": b'{"points": [', "more_body": True}]

    async def receive():
        if chunks:
            return chunks.pop()
        await asyncio.sleep(30)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await asyncio.wait_for(gw.app(scope, receive, send), 10)
    assert sent[0]["status"] == 408
    assert orjson.loads(sent[1]["body"])["code"] == "DEADLINE_EXCEEDED"
