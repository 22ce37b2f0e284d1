"""Revocations that survive restarts and Redis outages (ADR 0106), and what a revoked credential made."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from testkit import eventually
from throwaway import ThrowawayRedis
from tsmesh.v1 import auth_pb2, auth_pb2_grpc

from tsmesh_auth.config import AuthConfig
from tsmesh_auth.db import create_pool
from tsmesh_common.authn import Authenticator, AuthenticatorConfig, GrpcAuthSource
from tsmesh_common.errors import Unauthenticated

from .conftest import AuthServer, start_server


def _mesh(channel: grpc.aio.Channel) -> Authenticator:
    """Another service's authenticator, wired as gateway, query and ingest wire theirs."""
    source = GrpcAuthSource(channel)
    return Authenticator(AuthenticatorConfig("tsmesh-auth", "tsmesh"), source, source, revocations=source)


async def _refused(mesh: Authenticator, token: str) -> bool:
    try:
        await mesh.authenticate(token)
    except Unauthenticated:
        return True
    return False


async def _session(server: AuthServer) -> auth_pb2.TokenPair:
    name, _ = await server.tenant()
    return await server.login(name, await server.user(name))


async def test_a_restarted_authenticator_still_refuses_a_logged_out_token(auth_server: AuthServer) -> None:
    pair = await _session(auth_server)
    assert not await _refused(_mesh(auth_server.channel), pair.access_token)
    await auth_server.stub.Logout(auth_pb2.LogoutRequest(refresh_token=pair.refresh_token), metadata=auth_server.md())
    # a process that starts after the revocation was announced never heard it: it loads the list
    assert await _refused(_mesh(auth_server.channel), pair.access_token)


async def test_the_revocation_list_is_paged_and_holds_only_unexpired_tokens(auth_server: AuthServer) -> None:
    revocations = auth_server.parts.revocations
    async with auth_server.parts.pool.acquire() as conn:
        await revocations.record(conn, [(f"jti-{i:03}", 4_000_000_000.0) for i in range(5)] + [("old", 1.0)])
    pages: list[list[str]] = []
    page_token = ""
    while True:
        page = await auth_server.stub.ListRevocations(
            auth_pb2.ListRevocationsRequest(page_size=2, page_token=page_token)
        )
        pages.append([r.token_id for r in page.revocations])
        page_token = page.next_page_token
        if not page_token:
            break
    assert [t for page in pages for t in page] == [f"jti-{i:03}" for i in range(5)]
    assert max(len(page) for page in pages) == 2
    assert await revocations.prune() == 1
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await auth_server.stub.ListRevocations(auth_pb2.ListRevocationsRequest(page_size=-1))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_size" in (bad.value.details() or "")


@pytest.fixture
async def private_redis() -> AsyncIterator[ThrowawayRedis]:
    redis = ThrowawayRedis()
    try:
        yield redis
    finally:
        redis.stop()


@pytest.fixture
async def outage_server(auth_env: dict[str, str], private_redis: ThrowawayRedis) -> AsyncIterator[AuthServer]:
    """Auth on a Redis of its own (stoppable), republishing owed revocations every 0.1 s."""
    cfg = AuthConfig.from_env({**auth_env, "TSMESH_AUTH_REVOCATION_RETRY_SECONDS": "0.1"})
    pool = await create_pool(cfg.database_url, 5)
    redis = aioredis.Redis.from_url(private_redis.url, socket_timeout=1.0, socket_connect_timeout=1.0)
    pubsub = aioredis.Redis.from_url(private_redis.url, socket_connect_timeout=1.0)
    parts, app, port = await start_server(cfg, pool, redis, pubsub)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield AuthServer(parts, app, channel, auth_pb2_grpc.AuthServiceStub(channel), port, "test-outage")
    finally:
        await channel.close()
        await app.stop(0.5)
        await pool.close()
        await redis.aclose()
        await pubsub.aclose()


async def _published(server: AuthServer, token_id: str) -> bool:
    async with server.parts.pool.acquire() as conn:
        at = await conn.fetchval("SELECT published_at FROM auth.revocations WHERE token_id = $1", token_id)
    return at is not None


async def test_a_revocation_made_while_redis_is_down_is_refused_everywhere_once_it_is_back(
    outage_server: AuthServer, private_redis: ThrowawayRedis
) -> None:
    pair = await _session(outage_server)
    mesh = _mesh(outage_server.channel)
    jti = (await mesh.authenticate(pair.access_token)).token_id  # accepted and remembered
    feed_redis = aioredis.Redis.from_url(private_redis.url, socket_connect_timeout=1.0)
    feed = asyncio.create_task(
        mesh.follow_revocations(
            feed_redis, outage_server.parts.config.common.redis_namespace.revocation_channel, poll_seconds=0.1
        )
    )
    try:
        await asyncio.sleep(0.3)  # subscribed
        private_redis.stop()
        await outage_server.stub.Logout(
            auth_pb2.LogoutRequest(refresh_token=pair.refresh_token), metadata=outage_server.md()
        )
        assert not await _published(outage_server, jti)  # committed, announcement owed
        assert not await _refused(mesh, pair.access_token)  # the outage: nobody heard it yet
        private_redis.start()
        await eventually(lambda: _refused(mesh, pair.access_token))
        await eventually(lambda: _published(outage_server, jti))  # auth caught up on its own too
    finally:
        feed.cancel()
        await asyncio.gather(feed, return_exceptions=True)
        await feed_redis.aclose()


async def test_revoking_an_api_token_revokes_what_it_created(auth_server: AuthServer) -> None:
    _, _, admin = await auth_server.admin_token()

    async def create(token: str, name: str) -> Any:
        return await auth_server.stub.CreateApiToken(
            auth_pb2.CreateApiTokenRequest(name=name, scopes=["admin"]), metadata=auth_server.md(token)
        )

    parent = await create(admin, "automation")
    child = await create(parent.secret, "made-by-automation")
    grandchild = await create(child.secret, "made-by-child")
    sibling = await create(admin, "made-by-the-session")
    await auth_server.stub.RevokeApiToken(
        auth_pb2.RevokeApiTokenRequest(id=parent.token.id), metadata=auth_server.md(admin)
    )
    listed = await auth_server.stub.ListApiTokens(auth_pb2.ListApiTokensRequest(), metadata=auth_server.md(admin))
    revoked = {t.name: t.revoked for t in listed.tokens}
    assert revoked == {
        "automation": True,
        "made-by-automation": True,
        "made-by-child": True,
        "made-by-the-session": False,
    }
    for token in (child.secret, grandchild.secret):
        answer = await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=token))
        assert not answer.active
    assert (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=sibling.secret))).active


async def test_a_stolen_session_takes_its_tokens_along_but_a_logout_does_not(auth_server: AuthServer) -> None:
    auth_server.parts.sessions._reuse_grace = 0.0  # presenting a spent refresh token again is reuse
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)

    async def session_with_token() -> tuple[auth_pb2.TokenPair, str]:
        pair = await auth_server.login(name, email)
        made = await auth_server.stub.CreateApiToken(
            auth_pb2.CreateApiTokenRequest(name="ci", scopes=["read"]), metadata=auth_server.md(pair.access_token)
        )
        return pair, made.secret

    logged_out, kept = await session_with_token()
    await auth_server.stub.Logout(
        auth_pb2.LogoutRequest(refresh_token=logged_out.refresh_token), metadata=auth_server.md()
    )
    assert (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=kept))).active

    stolen, suspect = await session_with_token()
    refresh = auth_pb2.RefreshRequest(refresh_token=stolen.refresh_token)
    await auth_server.stub.Refresh(refresh, metadata=auth_server.md())
    with pytest.raises(grpc.aio.AioRpcError):
        await auth_server.stub.Refresh(refresh, metadata=auth_server.md())
    assert not (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=suspect))).active
