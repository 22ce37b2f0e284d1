"""Review fixes of ADR 0404 (now ADRs 0464, 0461, 0466): the per-address budget is spent before
authentication, refused credentials are remembered briefly (only those that cannot turn valid),
and the micro-cache is bounded in bytes."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from tsmesh_common.config import ConfigError
from tsmesh_common.context import Principal
from tsmesh_common.errors import Unauthenticated, Unavailable
from tsmesh_gateway.config import GatewayConfig
from tsmesh_gateway.guard import PrincipalCache, malformed
from tsmesh_gateway.microcache import ENTRY_OVERHEAD, MicroCache

RANGE = {"selector": {"metric": "cpu"}, "start_ns": 0, "end_ns": 10**12}


def _unknown_api_token() -> str:
    return f"tsm_{uuid.uuid4().hex[:12]}_{uuid.uuid4().hex}"


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
        answer = await gw.client.post(path, json=RANGE, headers={"authorization": f"Bearer {_unknown_api_token()}"})
        statuses.append(answer.status_code)
    assert statuses == [401, 401, 429, 429, 429, 429]
    assert introspection.calls == 2
    assert answer.json()["details"]["limit"] == f"{route_class}_per_address"
    assert int(answer.headers["retry-after"]) >= 1


async def test_an_unknown_api_token_is_checked_once_then_refused_from_the_negative_cache(
    gateway, introspection
) -> None:
    token = _unknown_api_token()
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


def test_malformed_tokens_are_told_apart_from_well_formed_ones(mesh) -> None:
    assert not malformed(mesh.mint.token("t"))
    assert not malformed(_unknown_api_token())
    for bad in ("x", "tsm_", "tsm_abc", "a.b.c", "a.b", "é.b.c", "x" * 9000, "eyJhbGciOiJub25lIn0.e30.c2ln"):
        assert malformed(bad), bad


class FakeAuthenticator:
    """Scripted answers per token; counts calls."""

    def __init__(self) -> None:
        self.answers: dict[str, list[object]] = {}
        self.calls: dict[str, int] = {}

    def on_revocation(self, callback) -> None:
        pass

    async def authenticate(self, token: str) -> Principal:
        self.calls[token] = self.calls.get(token, 0) + 1
        answer = self.answers[token].pop(0)
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, Principal)
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_negative_cache_keeps_only_refusals_that_cannot_turn_valid_and_is_bounded() -> None:
    auth, clock = FakeAuthenticator(), Clock()
    cache = PrincipalCache(auth, clock=clock, refused_ttl=5.0, refused_size=3)  # type: ignore[arg-type]
    principal = Principal("t", "u", frozenset({"read"}), None, "id-1", "jwt")
    jwt_like = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.c2ln"  # EdDSA with a kid: well formed
    # a well-formed JWT refused (its key may be published a moment later) is asked again
    auth.answers[jwt_like] = [Unauthenticated("invalid token"), principal]
    with pytest.raises(Unauthenticated):
        await cache.authenticate_header(f"Bearer {jwt_like}")
    assert await cache.authenticate_header(f"Bearer {jwt_like}") is principal
    # an auth outage is never remembered
    api = _unknown_api_token()
    auth.answers[api] = [Unavailable("auth down"), Unauthenticated("invalid token")]
    with pytest.raises(Unavailable):
        await cache.authenticate_header(f"Token {api}")
    with pytest.raises(Unauthenticated):
        await cache.authenticate_header(f"Token {api}")
    with pytest.raises(Unauthenticated):  # remembered: auth not asked again
        await cache.authenticate_header(f"Bearer {api}")
    assert auth.calls[api] == 2
    # malformed tokens never reach the authenticator
    with pytest.raises(Unauthenticated):
        await cache.authenticate_header("Bearer not-a-token")
    assert "not-a-token" not in auth.calls
    # bounded: the oldest refusals go first
    for i in range(5):
        with pytest.raises(Unauthenticated):
            await cache.authenticate_header(f"Bearer junk{i}")
    assert len(cache._refused) == 3
    auth.answers[api] = [Unauthenticated("invalid token")]  # pushed out by newer refusals: auth is asked again
    with pytest.raises(Unauthenticated):
        await cache.authenticate_header(f"Bearer {api}")
    assert auth.calls[api] == 3
    # and they expire
    with pytest.raises(Unauthenticated):
        await cache.authenticate_header(f"Bearer {api}")
    assert auth.calls[api] == 3
    clock.now += 5.1
    auth.answers[api] = [principal]
    assert await cache.authenticate_header(f"Bearer {api}") is principal


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


async def test_positive_auth_cache_is_keyed_on_the_token_and_evicts_the_oldest_not_everyone() -> None:
    auth, clock = FakeAuthenticator(), Clock()
    cache = PrincipalCache(auth, size=32, clock=clock)  # type: ignore[arg-type]
    token = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.c2ln"
    principal = Principal("t", "u", frozenset({"read"}), None, "id-1", "jwt")
    auth.answers[token] = [principal]
    # one token sent with endless variants of the header is one entry, checked by auth once
    for i in range(200):
        scheme = "".join(c.upper() if (i >> n) & 1 else c for n, c in enumerate("bearer"))
        assert await cache.authenticate_header(f"{scheme} {' ' * (i % 3)}{token}{' ' * (i % 5)}") is principal
    assert await cache.authenticate_header(f"Token {token}") is principal
    assert await cache.authenticate(token) is principal  # the stream's bare token shares the entry
    assert auth.calls[token] == 1 and len(cache._entries) == 1
    # when full, the oldest entries go and the others stay cached
    others = [f"tsm_{i:04d}_{'s' * 24}" for i in range(40)]
    for i, other in enumerate(others):
        auth.answers[other] = [Principal("t", f"u{i}", frozenset({"read"}), None, f"id-{i}", "api_token")]
        await cache.authenticate_header(f"Bearer {other}")
    assert len(cache._entries) <= 32
    assert token not in cache._entries and others[-1] in cache._entries
    assert cache.cached(others[-2]) is not None and sum(auth.calls[o] for o in others) == 40


async def test_concurrent_checks_of_one_token_ask_auth_once() -> None:
    auth, clock = FakeAuthenticator(), Clock()
    cache = PrincipalCache(auth, clock=clock)  # type: ignore[arg-type]
    token = "eyJhbGciOiJFZERTQSIsImtpZCI6ImsxIn0.e30.c2ln"
    principal = Principal("t", "u", frozenset({"read"}), None, "id-1", "jwt")
    refused = _unknown_api_token()
    auth.answers[token] = [principal, principal]
    auth.answers[refused] = [Unauthenticated("unknown token")]
    # a hot token's entry expiring: its in-flight requests share one check (no herd on auth)
    got = await asyncio.gather(*(cache.authenticate_header(f"Bearer {token}") for _ in range(64)))
    assert all(p is principal for p in got) and auth.calls[token] == 1 and not cache._flights
    clock.now += 10.0  # expired: checked again, once
    got = await asyncio.gather(*(cache.authenticate(token) for _ in range(8)))
    assert all(p is principal for p in got) and auth.calls[token] == 2
    # a refusal reaches every waiter, each with an exception of its own
    errors = await asyncio.gather(*(cache.authenticate(refused) for _ in range(4)), return_exceptions=True)
    assert all(isinstance(e, Unauthenticated) and e.message == "unknown token" for e in errors)
    assert len({id(e) for e in errors}) == 4 and auth.calls[refused] == 1 and not cache._flights
