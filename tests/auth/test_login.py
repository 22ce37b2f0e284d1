"""Login: token pair, claims, same refusal for unknown user and wrong password, throttling, rules."""

from __future__ import annotations

import time

import grpc
import jwt
import pytest
from tsmesh.v1 import auth_pb2

from tsmesh_common.authn import Authenticator, AuthenticatorConfig, GrpcAuthSource
from tsmesh_common.errors import InvalidArgument


def mesh_authenticator(channel: grpc.aio.Channel) -> Authenticator:
    """The authenticator exactly as another service builds it (JWKS + Introspect over gRPC)."""
    source = GrpcAuthSource(channel)
    return Authenticator(AuthenticatorConfig(issuer="tsmesh-auth", audience="tsmesh"), source, source)


async def test_login_returns_eddsa_jwt_that_other_services_verify(auth_server) -> None:
    name, tenant_id = await auth_server.tenant()
    email = await auth_server.user(name, "writer")
    pair = await auth_server.login(name, email.upper())
    assert pair.token_type == "Bearer" and pair.expires_in == 900 and pair.refresh_token
    header = jwt.get_unverified_header(pair.access_token)
    assert header["alg"] == "EdDSA" and header["kid"]
    claims = jwt.decode(pair.access_token, options={"verify_signature": False})
    assert claims["iss"] == "tsmesh-auth" and claims["aud"] == "tsmesh" and claims["tid"] == tenant_id
    assert claims["scope"] == "read write"
    assert claims["nbf"] <= time.time() < claims["exp"] and claims["jti"] and claims["sub"]
    principal = await mesh_authenticator(auth_server.channel).authenticate(pair.access_token)
    assert principal.tenant_id == tenant_id and principal.scopes == frozenset({"read", "write"})
    introspected = await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=pair.access_token))
    assert introspected.active and introspected.kind == auth_pb2.TOKEN_KIND_ACCESS_JWT
    assert introspected.tenant_id == tenant_id and list(introspected.scopes) == ["read", "write"]


async def test_unknown_user_and_wrong_password_get_the_same_answer(auth_server) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    answers = []
    for tenant, who, password in (
        (name, email, "wrong-password-123"),
        (name, "nobody@example.com", "wrong-password-123"),
        ("no-such-tenant", email, auth_server.password),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await auth_server.login(tenant, who, password)
        answers.append((refused.value.code(), refused.value.details()))
    assert answers == [(grpc.StatusCode.UNAUTHENTICATED, "invalid credentials")] * 3


async def test_unknown_user_costs_a_bcrypt_like_a_wrong_password(auth_server) -> None:
    hasher = auth_server.parts.hasher
    calls = []
    import bcrypt

    original = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed[:7])
        return original(password, hashed)

    bcrypt.checkpw = counting
    try:
        assert not await hasher.verify("whatever-password", None)
        stored = await hasher.hash("real-password-here")
        assert not await hasher.verify("whatever-password", stored)
        assert await hasher.verify("real-password-here", stored)
    finally:
        bcrypt.checkpw = original
    assert len(calls) == 3 and len(set(calls)) == 1  # same algorithm and cost every time


async def test_failed_logins_are_throttled_per_account_with_growing_delay(auth_server) -> None:
    name, _ = await auth_server.tenant()
    for who in (await auth_server.user(name), "ghost@example.com"):
        for _ in range(5):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await auth_server.login(name, who, "wrong-password-123")
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as limited:
            await auth_server.login(name, who, auth_server.password)
        assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        retry_after = dict(limited.value.trailing_metadata())["retry-after"]
        assert 0 < float(retry_after) <= 1.0


async def test_throttle_delay_doubles_and_is_capped() -> None:
    from tsmesh_auth.throttle import ThrottlePolicy

    policy = ThrottlePolicy(base_delay_seconds=1.0, max_delay_seconds=10.0)
    assert [policy.delay(n, 3) for n in range(2, 9)] == [0.0, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.delay(9, 3, cap=5.0) == 5.0


async def test_success_resets_the_account_counter(auth_server) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    for _ in range(4):
        with pytest.raises(grpc.aio.AioRpcError):
            await auth_server.login(name, email, "wrong-password-123")
    await auth_server.login(name, email)
    for _ in range(4):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await auth_server.login(name, email, "wrong-password-123")
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_password_rules_and_email_normalisation(auth_server) -> None:
    name, _ = await auth_server.tenant()
    directory = auth_server.parts.directory
    for bad in ("short", "aaaaaaaaaaaaaaaa", "x" * 73, "bob@example.com"):
        with pytest.raises(InvalidArgument) as refused:
            await directory.create_user(name, "bob@example.com", bad, "reader")
        assert refused.value.field == "password"
    with pytest.raises(InvalidArgument, match="email"):
        await directory.create_user(name, "not-an-email", auth_server.password, "reader")
    await directory.create_user(name, "  Bob@Example.COM ", auth_server.password, "reader")
    pair = await auth_server.login(name, "bob@example.com")
    assert jwt.decode(pair.access_token, options={"verify_signature": False})["scope"] == "read"


async def test_login_bad_input_names_the_field(auth_server) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await auth_server.login("", "a@example.com", "x")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and bad.value.details().startswith("tenant")
