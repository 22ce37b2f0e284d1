"""Gateway test fixtures: fake upstreams on a real gRPC server, the app in process (httpx ASGI
transport, real Redis) and, for WebSocket tests, a real Granian gateway process.
"""

from __future__ import annotations

import resource
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from gw_fakes import (
    ApiTokens,
    FakeAuth,
    FakeIngest,
    FakeQuery,
    gateway_environ,
    start_gateway,
    start_upstreams,
    stop_gateway,
)
from starlette.applications import Starlette
from testkit import REDIS_URL, TokenMint, eventually
from throwaway import free_port, wait_for_port

from tsmesh_common.authn import Authenticator, AuthenticatorConfig
from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.ratelimit import RateLimiter
from tsmesh_common.redis_keys import BUMP_GENERATION_LUA, data_generation_key
from tsmesh_common.server import GrpcApp
from tsmesh_gateway.app import Parts, build_app
from tsmesh_gateway.config import GatewayConfig
from tsmesh_gateway.upstreams import Upstreams


@dataclass
class Mesh:
    """The fake upstreams shared by the session."""

    app: GrpcApp
    port: int
    mint: TokenMint
    api: ApiTokens
    auth: FakeAuth
    ingest: FakeIngest
    query: FakeQuery


@pytest_asyncio.fixture(scope="session")
async def mesh() -> AsyncIterator[Mesh]:
    mint = TokenMint()
    api = ApiTokens()
    app, port, auth, ingest, query = await start_upstreams(mint, api)
    yield Mesh(app, port, mint, api, auth, ingest, query)
    await app.stop(0.1)


@dataclass
class Gateway:
    """An in-process gateway app and a client for it."""

    app: Starlette
    client: httpx.AsyncClient
    cfg: GatewayConfig
    mesh: Mesh
    tenant: str

    def bearer(self, scopes: str = "read write admin", tenant: str | None = None, **claims: Any) -> dict[str, str]:
        return {"authorization": f"Bearer {self.mesh.mint.token(tenant or self.tenant, scopes, **claims)}"}

    async def bump_generation(self, redis: aioredis.Redis) -> int:
        """Bump the tenant's data generation as the ingest writer does after a commit, and return once
        this gateway can see it: at once when it reads generations from Redis, or after the
        announcement reached its generation feed (a moment later, ADR 0406)."""
        value = int(await redis.eval(BUMP_GENERATION_LUA, 1, data_generation_key(self.tenant)))
        cache = self.app.state.deps.cache
        await eventually(lambda: (cache.current(self.tenant) or value) >= value, timeout=5.0, interval=0.001)
        return value


GatewayFactory = Callable[..., Any]


@pytest_asyncio.fixture
async def gateway_factory(mesh: Mesh, redis_client: aioredis.Redis) -> AsyncIterator[Callable[..., Any]]:
    """Build in-process gateways with extra environment settings; all closed afterwards."""
    opened: list[tuple[Any, httpx.AsyncClient, Upstreams]] = []
    leans: list[Any] = []

    async def make(**env: str) -> Gateway:
        environ = {
            "TSMESH_AUTH_ADDR": f"127.0.0.1:{mesh.port}",
            "TSMESH_INGEST_ADDR": f"127.0.0.1:{mesh.port}",
            "TSMESH_QUERY_ADDR": f"127.0.0.1:{mesh.port}",
            "TSMESH_REDIS_URL": REDIS_URL,
            **env,
        }
        cfg = GatewayConfig.from_env(environ)
        upstreams = Upstreams.connect(
            auth_addr=cfg.common.auth_addr,
            ingest_addr=cfg.ingest_addr,
            query_addr=cfg.query_addr,
            deadline=cfg.deadline_seconds,
            failures=cfg.breaker_failures,
            reset=cfg.breaker_reset_seconds,
        )
        authenticator = Authenticator(
            AuthenticatorConfig(issuer=mesh.mint.issuer, audience=mesh.mint.audience), mesh.mint.jwks, mesh.api
        )
        limiter = RateLimiter(redis_client, prefix=f"test:gw:{uuid.uuid4().hex[:8]}")
        lean = LeanRedis.from_url(REDIS_URL)
        app = build_app(Parts(cfg, upstreams, authenticator, limiter, redis_client, lean))
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        transport = httpx.ASGITransport(app=app, client=(f"10.0.{len(opened)}.{uuid.uuid4().int % 250}", 1234))
        client = httpx.AsyncClient(transport=transport, base_url="http://gateway")
        opened.append((lifespan, client, upstreams))
        leans.append(lean)
        return Gateway(app, client, cfg, mesh, f"t-{uuid.uuid4().hex[:10]}")

    yield make
    for lifespan, client, upstreams in opened:
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
        await upstreams.close()
    for lean in leans:
        if lean is not None:
            await lean.aclose()


@pytest_asyncio.fixture
async def gateway(gateway_factory: Callable[..., Any]) -> Gateway:
    gw: Gateway = await gateway_factory()
    return gw


@dataclass
class Served:
    """A real Granian gateway process in front of the fake upstreams."""

    port: int
    ws_port: int
    mesh: Mesh

    @property
    def ws_url(self) -> str:
        """The lean websockets listener (TSMESH_GATEWAY_WS_PORT)."""
        return f"ws://127.0.0.1:{self.ws_port}/v1/stream"

    @property
    def granian_ws_url(self) -> str:
        """The same endpoint served by Granian on the HTTP port."""
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="session")
def served_factory(mesh: Mesh) -> Iterator[Callable[..., Served]]:
    """Start gateway processes (with extra env); each is stopped at the end of the session."""
    procs = []

    def make(**env: str) -> Served:
        port, ws_port = free_port(), free_port()
        proc = start_gateway(gateway_environ(mesh.port, port, REDIS_URL, TSMESH_GATEWAY_WS_PORT=str(ws_port), **env))
        procs.append(proc)
        wait_for_port(port, 20)
        wait_for_port(ws_port, 20)
        return Served(port, ws_port, mesh)

    yield make
    for proc in procs:
        stop_gateway(proc)


@pytest.fixture(scope="session")
def served(served_factory: Callable[..., Served]) -> Served:
    return served_factory(
        TSMESH_GATEWAY_WS_PING_SECONDS="0.5",
        TSMESH_GATEWAY_WS_IDLE_TIMEOUT_SECONDS="30",
        TSMESH_GATEWAY_WS_AUTH_TIMEOUT_SECONDS="1",
        TSMESH_GATEWAY_WS_SEND_QUEUE_POINTS="2000",
    )


@pytest.fixture
def file_limit() -> Iterator[tuple[int, int]]:
    """The process's (soft, hard) open-file limit, put back after the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        yield soft, hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
