"""The principal cache (``tsmesh_gateway.principal_cache``): malformed tokens told apart, verified
credentials kept per token, only refusals that cannot turn valid remembered, one check per token
in flight."""

from __future__ import annotations

import asyncio

import pytest
from gw_fakes import unknown_api_token

from tsmesh_common.context import Principal
from tsmesh_common.errors import Unauthenticated, Unavailable
from tsmesh_gateway.principal_cache import PrincipalCache, malformed


def test_malformed_tokens_are_told_apart_from_well_formed_ones(mesh) -> None:
    assert not malformed(mesh.mint.token("t"))
    assert not malformed(unknown_api_token())
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
    api = unknown_api_token()
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
    refused = unknown_api_token()
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
