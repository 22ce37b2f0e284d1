"""Signing keys: JWKS, rotation with a publish lead, retirement, encryption at rest, the KEK rules."""

from __future__ import annotations

import asyncio
import base64
import os
from datetime import timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from tsmesh.v1 import auth_pb2

from tsmesh_auth.app import build
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.db import create_pool
from tsmesh_auth.kek import KeyEncryption
from tsmesh_auth.keys import rotate
from tsmesh_common.authn import Authenticator, AuthenticatorConfig, GrpcAuthSource
from tsmesh_common.config import ConfigError
from tsmesh_common.errors import FailedPrecondition

from .conftest import auth_environ


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


async def test_jwks_publishes_the_signing_key(auth_server) -> None:
    jwks = await auth_server.stub.GetJwks(auth_pb2.GetJwksRequest())
    assert len(jwks.keys) == 1
    key = jwks.keys[0]
    assert (key.kty, key.crv, key.alg, key.use) == ("OKP", "Ed25519", "EdDSA", "sig") and key.kid and key.x
    assert key.kid == auth_server.parts.keyring.signing_key().kid


async def test_rotation_publishes_first_then_signs_and_old_tokens_keep_verifying(auth_server) -> None:
    parts = auth_server.parts
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    old = await auth_server.login(name, email)
    source = GrpcAuthSource(auth_server.channel)
    verifier = Authenticator(AuthenticatorConfig(issuer="tsmesh-auth", audience="tsmesh"), source, source)
    await verifier.authenticate(old.access_token)

    encryption = parts.keyring._encryption
    lead_kid = await rotate(parts.pool, encryption, timedelta(hours=1), timedelta(minutes=15))
    await parts.keyring.load()
    kids = [k.kid for k in (await auth_server.stub.GetJwks(auth_pb2.GetJwksRequest())).keys]
    assert lead_kid in kids and _kid(old.access_token) in kids  # published before it signs
    assert _kid((await auth_server.login(name, email)).access_token) == _kid(old.access_token)

    new_kid = await rotate(parts.pool, encryption, timedelta(0), timedelta(minutes=15))
    await parts.keyring.load()
    fresh = await auth_server.login(name, email)
    assert _kid(fresh.access_token) == new_kid
    await asyncio.sleep(1.05)  # verifiers refetch the JWKS at most once a second
    assert (await verifier.authenticate(fresh.access_token)).tenant_id  # unknown kid → JWKS refetch
    assert (await verifier.authenticate(old.access_token)).tenant_id  # old key still verifies

    async with parts.pool.acquire() as conn:
        await conn.execute(
            "UPDATE auth.signing_keys SET retire_at = now() - interval '1 second' WHERE kid <> $1", new_kid
        )
    await parts.keyring.load()
    kids = [k.kid for k in (await auth_server.stub.GetJwks(auth_pb2.GetJwksRequest())).keys]
    assert kids == [new_kid]
    answer = await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=old.access_token))
    assert not answer.active  # a retired key verifies nothing


async def test_rotation_sets_retirement_after_the_longest_token_lifetime(auth_server) -> None:
    parts = auth_server.parts
    before = parts.keyring.signing_key().kid
    await rotate(parts.pool, parts.keyring._encryption, timedelta(0), timedelta(minutes=15))
    async with parts.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT deactivated_at, retire_at FROM auth.signing_keys WHERE kid = $1", before)
    assert row["retire_at"] - row["deactivated_at"] >= timedelta(minutes=15)


async def test_private_keys_are_encrypted_at_rest(auth_server) -> None:
    key = auth_server.parts.keyring.signing_key()
    raw = key.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    async with auth_server.parts.pool.acquire() as conn:
        blob = bytes(await conn.fetchval("SELECT private_key_enc FROM auth.signing_keys WHERE kid = $1", key.kid))
    assert raw not in blob and base64.b64encode(raw) not in blob
    assert KeyEncryption(os.urandom(32)).open(key.kid, blob) is None  # another KEK cannot open it


async def test_replicas_sharing_the_kek_share_the_keys(auth_env, redis_client) -> None:
    cfg = AuthConfig.from_env(auth_env)
    pool = await create_pool(cfg.database_url, 3)
    try:
        first = await build(cfg, pool, redis_client)
        second = await build(cfg, pool, redis_client)
        assert first.keyring.signing_key().kid == second.keyring.signing_key().kid
        assert second.keyring.signing_key().private_key is not None
    finally:
        await pool.close()


def test_production_refuses_to_start_without_a_kek(migrated) -> None:
    env = auth_environ(migrated, TSMESH_ENV="production", TSMESH_REDIS_URL="redis://127.0.0.1:6379/0")
    del env["TSMESH_AUTH_KEK"]
    with pytest.raises(ConfigError) as refused:
        AuthConfig.from_env(env)
    assert refused.value.variable == "TSMESH_AUTH_KEK"
    with pytest.raises(ConfigError, match="TSMESH_AUTH_KEK"):
        AuthConfig.from_env({**env, "TSMESH_AUTH_KEK": "too-short"})


def test_kek_file_is_read(migrated, tmp_path) -> None:
    kek = os.urandom(32)
    path = tmp_path / "kek"
    path.write_text(base64.b64encode(kek).decode() + "\n")
    env = auth_environ(migrated, TSMESH_AUTH_KEK_FILE=str(path))
    del env["TSMESH_AUTH_KEK"]
    assert AuthConfig.from_env(env).kek == kek
    assert "kek=<set>" in repr(AuthConfig.from_env(env)) and base64.b64encode(kek).decode() not in repr(
        AuthConfig.from_env(env)
    )
    with pytest.raises(ConfigError, match="TSMESH_AUTH_KEK_FILE"):
        AuthConfig.from_env({**env, "TSMESH_AUTH_KEK_FILE": str(tmp_path / "missing")})


async def test_production_refuses_keys_it_cannot_decrypt(auth_env, redis_client) -> None:
    cfg = AuthConfig.from_env(auth_env)
    pool = await create_pool(cfg.database_url, 3)
    try:
        await build(cfg, pool, redis_client)
        wrong = AuthConfig.from_env(
            {**auth_env, "TSMESH_ENV": "production", "TSMESH_AUTH_KEK": base64.b64encode(os.urandom(32)).decode()}
        )
        with pytest.raises(FailedPrecondition, match="cannot be decrypted"):
            await build(wrong, pool, redis_client)
    finally:
        await pool.close()


async def test_dev_mode_generates_what_is_missing_and_says_so(auth_env, redis_client, caplog) -> None:
    env = dict(auth_env)
    del env["TSMESH_AUTH_KEK"]
    cfg = AuthConfig.from_env(env)
    pool = await create_pool(cfg.database_url, 3)
    try:
        with caplog.at_level("WARNING"):
            parts = await build(cfg, pool, redis_client)
            again = await build(cfg, pool, redis_client)
        assert parts.keyring.signing_key().kid == again.keyring.signing_key().kid
        messages = [r.getMessage() for r in caplog.records]
        assert any("generated a development key-encryption key" in m for m in messages)
        assert any("generated a new signing key" in m for m in messages)
    finally:
        await pool.close()
