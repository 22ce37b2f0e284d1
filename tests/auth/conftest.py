"""Fixtures of the auth tests: a migrated throwaway database, the wired service and a live server."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from testkit import fresh_namespace
from tsmesh.v1 import auth_pb2, auth_pb2_grpc

from tsmesh_auth.app import AuthParts, build, create_app
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.db import create_pool
from tsmesh_auth.migrate import upgrade_async
from tsmesh_common.server import GrpcApp
from tsmesh_common.service_credential import ServiceCredential

PASSWORD = "correct-horse-battery-staple"
REDIS_URL = os.environ.get("TSMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
Database = Any  # tests/conftest.py Database: .dsn(role)
# The mesh services' credentials towards auth, as the test stacks hold them (fresh per test run).
GATEWAY = ServiceCredential("gateway", base64.urlsafe_b64encode(os.urandom(32)).decode())
QUERY = ServiceCredential("query", base64.urlsafe_b64encode(os.urandom(32)).decode())


def auth_environ(database: Database, **overrides: str) -> dict[str, str]:
    env = {
        "TSMESH_DATABASE_URL": database.dsn("tsmesh_auth"),
        "TSMESH_REDIS_URL": REDIS_URL,
        "TSMESH_REDIS_NAMESPACE": fresh_namespace().name,
        "TSMESH_AUTH_BCRYPT_COST": "4",
        "TSMESH_AUTH_KEK": base64.b64encode(os.urandom(32)).decode(),
        "TSMESH_AUTH_SERVICE_SECRETS": f"{GATEWAY.service}:{GATEWAY.secret},{QUERY.service}:{QUERY.secret}",
        "TSMESH_GRPC_PORT": "0",
        "TSMESH_METRICS_PORT": "0",
    }
    env.update(overrides)
    return env


@pytest.fixture
async def migrated(database: Database) -> Database:
    await upgrade_async(database.dsn("tsmesh_auth"))
    return database


@dataclass
class AuthServer:
    """A running AuthService on a free port, with helpers to seed tenants and users."""

    parts: AuthParts
    app: GrpcApp
    channel: grpc.aio.Channel
    stub: Any
    port: int
    address: str
    password: str = PASSWORD

    def md(self, token: str | None = None) -> tuple[tuple[str, str], ...]:
        """Call metadata as the gateway sends it: its credential, a unique client address per test
        (throttling) and the bearer token."""
        md = [*GATEWAY.metadata(), ("x-client-address", self.address)]
        if token:
            md.append(("authorization", f"Bearer {token}"))
        return tuple(md)

    async def tenant(self, name: str | None = None) -> tuple[str, str]:
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        tenant_id, _ = await self.parts.directory.create_tenant(name)
        return name, tenant_id

    async def user(self, tenant: str, role: str = "admin", email: str | None = None) -> str:
        email = email or f"u{uuid.uuid4().hex[:8]}@example.com"
        await self.parts.directory.create_user(tenant, email, PASSWORD, role)
        return email

    async def login(self, tenant: str, email: str, password: str = PASSWORD) -> auth_pb2.TokenPair:
        response = await self.stub.Login(
            auth_pb2.LoginRequest(tenant=tenant, email=email, password=password), metadata=self.md(), timeout=10
        )
        return response.tokens

    async def admin_token(self) -> tuple[str, str, str]:
        """(tenant name, tenant id, access JWT of a fresh admin of that tenant)."""
        name, tenant_id = await self.tenant()
        email = await self.user(name, "admin")
        pair = await self.login(name, email)
        return name, tenant_id, pair.access_token


async def start_server(cfg: AuthConfig, pool: Any, redis: Any, pubsub: Any) -> tuple[AuthParts, GrpcApp, int]:
    parts = await build(cfg, pool, redis)
    app = create_app(parts, pubsub)
    port = await app.start("127.0.0.1", 0)
    return parts, app, port


@pytest.fixture
async def auth_env(migrated: Database) -> dict[str, str]:
    return auth_environ(migrated)


@pytest.fixture
async def auth_server(auth_env: dict[str, str], redis_client: aioredis.Redis) -> AsyncIterator[AuthServer]:
    cfg = AuthConfig.from_env(auth_env)
    pool = await create_pool(cfg.database_url, 5)
    pubsub = aioredis.Redis.from_url(REDIS_URL)
    parts, app, port = await start_server(cfg, pool, redis_client, pubsub)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield AuthServer(parts, app, channel, auth_pb2_grpc.AuthServiceStub(channel), port, f"test-{uuid.uuid4().hex}")
    finally:
        await channel.close()
        await app.stop(0.5)
        await pool.close()
        await pubsub.aclose()
