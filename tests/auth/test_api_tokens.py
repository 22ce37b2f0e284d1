"""API tokens: format, hash-only storage, introspection cache, revoke (mesh-wide), rotate with grace."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time

import grpc
import pytest
import redis.asyncio as aioredis
from tsmesh.v1 import auth_pb2

from tsmesh_common.authn import Authenticator, AuthenticatorConfig, GrpcAuthSource
from tsmesh_common.errors import Unauthenticated

TOKEN_FORMAT = re.compile(r"^tsm_[0-9a-f]{16}_[A-Za-z0-9_\-]{43}$")


async def _create(server, admin_jwt: str, scopes=("read", "write"), ttl: int = 0) -> auth_pb2.CreateApiTokenResponse:
    return await server.stub.CreateApiToken(
        auth_pb2.CreateApiTokenRequest(name="ci", scopes=list(scopes), ttl_seconds=ttl),
        metadata=server.md(admin_jwt),
        timeout=10,
    )


async def test_create_introspect_and_list(auth_server) -> None:
    _, tenant_id, admin = await auth_server.admin_token()
    created = await _create(auth_server, admin, ttl=3600)
    assert TOKEN_FORMAT.match(created.secret)
    assert created.secret.split("_")[1] == created.token.id
    answer = await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))
    assert answer.active and answer.tenant_id == tenant_id and answer.token_id == created.token.id
    assert answer.kind == auth_pb2.TOKEN_KIND_API_TOKEN and list(answer.scopes) == ["read", "write"]
    assert abs(answer.expires_at - (time.time() + 3600)) < 60
    listed = await auth_server.stub.ListApiTokens(auth_pb2.ListApiTokensRequest(), metadata=auth_server.md(admin))
    assert [t.id for t in listed.tokens] == [created.token.id]
    async with auth_server.parts.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM auth.api_tokens WHERE id = $1", created.token.id)
    assert bytes(row["secret_hash"]) == hashlib.sha256(created.secret.encode()).digest()
    assert created.secret.split("_", 2)[2] not in repr(dict(row))


async def test_api_token_works_as_a_credential_in_the_mesh(auth_server) -> None:
    _, tenant_id, admin = await auth_server.admin_token()
    created = await _create(auth_server, admin, scopes=("admin",))
    listed = await auth_server.stub.ListApiTokens(
        auth_pb2.ListApiTokensRequest(), metadata=auth_server.md(created.secret)
    )
    assert len(listed.tokens) == 1
    source = GrpcAuthSource(auth_server.channel)
    mesh = Authenticator(AuthenticatorConfig(issuer="tsmesh-auth", audience="tsmesh"), source, source)
    principal = await mesh.authenticate(created.secret)
    assert principal.tenant_id == tenant_id and principal.kind == "api_token"


async def test_introspect_is_served_from_cache_and_last_used_is_written_once(auth_server) -> None:
    _, _, admin = await auth_server.admin_token()
    created = await _create(auth_server, admin)
    store = auth_server.parts.tokens
    pool = auth_server.parts.pool
    for _ in range(20):
        assert (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))).active
    await store.drain()
    async with pool.acquire() as conn:
        first = await conn.fetchval("SELECT last_used_at FROM auth.api_tokens WHERE id = $1", created.token.id)
    assert first is not None
    for _ in range(20):
        await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))
    await store.drain()
    async with pool.acquire() as conn:
        second = await conn.fetchval("SELECT last_used_at FROM auth.api_tokens WHERE id = $1", created.token.id)
    assert second == first  # at most once a minute per token
    assert len(store._cache) == 1


async def test_revoked_api_token_is_refused_everywhere_within_a_second(auth_server) -> None:
    _, _, admin = await auth_server.admin_token()
    created = await _create(auth_server, admin)
    token_id = created.token.id
    channel = auth_server.parts.config.common.redis_namespace.revocation_channel
    listener = aioredis.Redis.from_url("redis://127.0.0.1:6379/0")
    pubsub = listener.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(channel)
    # another service's authenticator, caching the token and following revocations
    source = GrpcAuthSource(auth_server.channel)
    mesh = Authenticator(AuthenticatorConfig(issuer="tsmesh-auth", audience="tsmesh"), source, source)
    follower = asyncio.create_task(
        mesh.follow_revocations(aioredis.Redis.from_url("redis://127.0.0.1:6379/0"), channel)
    )
    try:
        await mesh.authenticate(created.secret)
        await asyncio.sleep(0.2)  # subscribed
        started = time.monotonic()
        revoked = await auth_server.stub.RevokeApiToken(
            auth_pb2.RevokeApiTokenRequest(id=token_id), metadata=auth_server.md(admin)
        )
        assert revoked.token.revoked
        message = None
        while message is None and time.monotonic() - started < 1.0:
            candidate = await pubsub.get_message(timeout=0.1)
            if candidate and candidate["data"].decode().split()[0] == token_id:
                message = candidate
        assert message is not None, "no revocation event within a second"
        until = int(message["data"].decode().split()[1])
        assert until > time.time()
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            try:
                await mesh.authenticate(created.secret)
            except Unauthenticated:
                break
            await asyncio.sleep(0.02)
        else:
            pytest.fail("the other service still accepts the revoked token after a second")
        answer = await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))
        assert not answer.active
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await auth_server.stub.ListApiTokens(
                auth_pb2.ListApiTokensRequest(), metadata=auth_server.md(created.secret)
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    finally:
        follower.cancel()
        await pubsub.aclose()
        await listener.aclose()


async def test_rotate_keeps_the_old_secret_for_the_grace_period(auth_server) -> None:
    _, _, admin = await auth_server.admin_token()
    created = await _create(auth_server, admin)
    assert (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))).active
    rotated = await auth_server.stub.RotateApiToken(
        auth_pb2.RotateApiTokenRequest(id=created.token.id, grace_seconds=1), metadata=auth_server.md(admin)
    )
    assert rotated.secret != created.secret and rotated.token.id == created.token.id
    for secret in (created.secret, rotated.secret):
        assert (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=secret))).active
    await asyncio.sleep(1.2)
    assert not (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))).active
    assert (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=rotated.secret))).active


async def test_expired_api_token_is_inactive(auth_server) -> None:
    _, _, admin = await auth_server.admin_token()
    created = await _create(auth_server, admin, ttl=1)
    assert (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))).active
    await asyncio.sleep(1.1)
    assert not (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))).active


async def test_token_of_tenant_a_cannot_touch_tenant_b(auth_server) -> None:
    _, _, admin_a = await auth_server.admin_token()
    _, _, admin_b = await auth_server.admin_token()
    token_b = await _create(auth_server, admin_b)
    for call, request in (
        (auth_server.stub.RevokeApiToken, auth_pb2.RevokeApiTokenRequest(id=token_b.token.id)),
        (auth_server.stub.RotateApiToken, auth_pb2.RotateApiTokenRequest(id=token_b.token.id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await call(request, metadata=auth_server.md(admin_a))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert token_b.token.id not in denied.value.details()
    listed_a = await auth_server.stub.ListApiTokens(auth_pb2.ListApiTokensRequest(), metadata=auth_server.md(admin_a))
    assert token_b.token.id not in [t.id for t in listed_a.tokens]
    assert (await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=token_b.secret))).active
    async with auth_server.parts.pool.acquire() as conn:
        denied_rows = await conn.fetchval("SELECT count(*) FROM auth.audit_log WHERE action = 'permission_denied'")
    assert denied_rows == 2


async def test_admin_scope_required_and_bad_scopes_named(auth_server) -> None:
    name, _ = await auth_server.tenant()
    writer = await auth_server.login(name, await auth_server.user(name, "writer"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await _create(auth_server, writer.access_token)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    _, _, admin = await auth_server.admin_token()
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await _create(auth_server, admin, scopes=("read", "root"))
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad.value.details().startswith("scopes")
    with pytest.raises(grpc.aio.AioRpcError) as unauth:
        await auth_server.stub.ListApiTokens(auth_pb2.ListApiTokensRequest())
    assert unauth.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_report_audit_event_records_the_caller(auth_server) -> None:
    _, tenant_id, admin = await auth_server.admin_token()
    await auth_server.stub.ReportAuditEvent(
        auth_pb2.ReportAuditEventRequest(action="permission_denied", outcome="refused", detail="query.Range"),
        metadata=auth_server.md(admin),
    )
    async with auth_server.parts.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM auth.audit_log WHERE action = 'permission_denied'")
    assert row["tenant_id"] == tenant_id and row["client_address"] == auth_server.address and row["request_id"]


async def test_only_admins_may_report_events_other_than_their_own_refusals(auth_server) -> None:
    name, _ = await auth_server.tenant()
    reader = await auth_server.login(name, await auth_server.user(name, "reader"))
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await auth_server.stub.ReportAuditEvent(
            auth_pb2.ReportAuditEventRequest(action="login_success", outcome="ok", detail="forged"),
            metadata=auth_server.md(reader.access_token),
        )
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    await auth_server.stub.ReportAuditEvent(
        auth_pb2.ReportAuditEventRequest(action="permission_denied", outcome="denied", detail="ingest.Write"),
        metadata=auth_server.md(reader.access_token),
    )
    async with auth_server.parts.pool.acquire() as conn:
        forged = await conn.fetchval("SELECT count(*) FROM auth.audit_log WHERE detail = 'forged'")
        own = await conn.fetchval("SELECT count(*) FROM auth.audit_log WHERE detail = 'ingest.Write'")
    assert (forged, own) == (0, 1)
