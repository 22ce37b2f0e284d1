"""Refresh rotation, reuse detection (family revocation + audit), the concurrent race, logout."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest
from tsmesh.v1 import auth_pb2

from tsmesh_auth.sessions import Sessions


async def _refresh(server, token: str) -> auth_pb2.TokenPair:
    response = await server.stub.Refresh(auth_pb2.RefreshRequest(refresh_token=token), metadata=server.md(), timeout=10)
    return response.tokens


async def _audit_actions(server) -> list[tuple[str, str]]:
    async with server.parts.pool.acquire() as conn:
        rows = await conn.fetch("SELECT action, outcome FROM auth.audit_log ORDER BY id")
    return [(r["action"], r["outcome"]) for r in rows]


async def test_refresh_rotates_the_token(auth_server) -> None:
    name, _ = await auth_server.tenant()
    first = await auth_server.login(name, await auth_server.user(name))
    second = await _refresh(auth_server, first.refresh_token)
    assert second.refresh_token != first.refresh_token and second.access_token != first.access_token
    third = await _refresh(auth_server, second.refresh_token)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)


async def test_reused_refresh_token_revokes_the_family_and_is_audited(auth_server) -> None:
    auth_server.parts.sessions._reuse_grace = 0.0
    name, _ = await auth_server.tenant()
    first = await auth_server.login(name, await auth_server.user(name))
    second = await _refresh(auth_server, first.refresh_token)
    await asyncio.sleep(0.01)
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await _refresh(auth_server, first.refresh_token)
    assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reused.value.details() == "invalid refresh token"
    with pytest.raises(grpc.aio.AioRpcError) as family:
        await _refresh(auth_server, second.refresh_token)
    assert family.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert ("refresh_token.reuse", "family_revoked") in await _audit_actions(auth_server)
    # the access token of the revoked family is refused too (announced as revoked)
    introspected = await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=second.access_token))
    assert not introspected.active


async def test_two_concurrent_refreshes_exactly_one_wins(auth_server) -> None:
    name, _ = await auth_server.tenant()
    pair = await auth_server.login(name, await auth_server.user(name))
    results = await asyncio.gather(
        *(_refresh(auth_server, pair.refresh_token) for _ in range(2)), return_exceptions=True
    )
    winners = [r for r in results if isinstance(r, auth_pb2.TokenPair)]
    losers = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(winners) == 1 and len(losers) == 1
    assert losers[0].code() == grpc.StatusCode.UNAUTHENTICATED
    # the loser of a genuine race does not take the winner's session down
    assert (await _refresh(auth_server, winners[0].refresh_token)).access_token
    assert ("refresh_token.race", "refused") in await _audit_actions(auth_server)


async def test_concurrent_refreshes_in_separate_transactions_at_the_sql_level(auth_server) -> None:
    """Two sessions objects (as two replicas) racing many times: never two winners."""
    parts = auth_server.parts
    other = Sessions(
        parts.pool,
        parts.directory,
        parts.hasher,
        parts.sessions._throttle,
        parts.sessions._issuer,
        parts.audit,
        parts.revocations,
        refresh_ttl_seconds=3600,
        reuse_grace_seconds=2.0,
    )
    name, _ = await auth_server.tenant()
    tokens = await parts.sessions.login(name, await auth_server.user(name), auth_server.password, "10.9.9.9")
    current = tokens.refresh_token
    for _ in range(10):
        results = await asyncio.gather(
            parts.sessions.refresh(current, "a"), other.refresh(current, "b"), return_exceptions=True
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        assert len(winners) == 1
        current = winners[0].refresh_token


async def test_logout_revokes_the_family(auth_server) -> None:
    name, _ = await auth_server.tenant()
    pair = await auth_server.login(name, await auth_server.user(name))
    await auth_server.stub.Logout(auth_pb2.LogoutRequest(refresh_token=pair.refresh_token), metadata=auth_server.md())
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await _refresh(auth_server, pair.refresh_token)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    # unknown or garbage tokens: logout answers the same, refresh refuses blandly
    await auth_server.stub.Logout(auth_pb2.LogoutRequest(refresh_token="rt_unknown"))
    for garbage in ("", "x" * 10_000, "rt_ü"):
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await _refresh(auth_server, garbage)
        assert bad.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert bad.value.details() == "invalid refresh token"


async def test_refresh_token_is_stored_only_as_a_hash(auth_server) -> None:
    name, _ = await auth_server.tenant()
    pair = await auth_server.login(name, await auth_server.user(name))
    async with auth_server.parts.pool.acquire() as conn:
        dump = await conn.fetchval("SELECT string_agg(t::text, '|') FROM auth.refresh_tokens t")
    assert pair.refresh_token not in dump and pair.refresh_token[3:] not in dump


async def test_long_expired_refresh_tokens_are_purged(auth_server) -> None:
    name, _ = await auth_server.tenant()
    pair = await auth_server.login(name, await auth_server.user(name))
    await auth_server.login(name, (await auth_server.user(name)))
    async with auth_server.parts.pool.acquire() as conn:
        await conn.execute(
            "UPDATE auth.refresh_tokens SET expires_at = now() - interval '2 days' WHERE token_hash = $1",
            hashlib.sha256(pair.refresh_token.encode()).digest(),
        )
    assert await auth_server.parts.sessions.purge_expired() == 1
    async with auth_server.parts.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM auth.refresh_tokens") == 1
