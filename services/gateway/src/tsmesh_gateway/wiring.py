"""The gateway's composition root (ADR 0012): ``connect`` opens one worker's clients, ``build``
assembles the ASGI application over them; :func:`create_app`, the Granian factory, runs both in
each worker. Tests pass their own clients to ``build``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import WebSocketRoute

from tsmesh_common.authn import Authenticator, GrpcAuthSource
from tsmesh_common.bootstrap import mesh_authenticator, revocation_feed, start_process
from tsmesh_common.config import load_or_exit
from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.ratelimit import RateLimiter
from tsmesh_gateway import tally
from tsmesh_gateway.app import GatewayApp
from tsmesh_gateway.compression import GzipWhenAccepted
from tsmesh_gateway.config import GatewayConfig
from tsmesh_gateway.deps import Deps
from tsmesh_gateway.drain import DRAIN_SIGNAL
from tsmesh_gateway.edge import EdgeMiddleware
from tsmesh_gateway.fastpath import FastQueries
from tsmesh_gateway.generation_feed import FEED_NAME, GenerationFeed
from tsmesh_gateway.microcache import GenerationReader, MicroCache
from tsmesh_gateway.principal_cache import PrincipalCache
from tsmesh_gateway.querycache import QueryCache
from tsmesh_gateway.rate_leasing import BatchingLimiter, Limiter, RouteLimits
from tsmesh_gateway.routes import mount
from tsmesh_gateway.routes.ops import Readiness
from tsmesh_gateway.stream.endpoint import StreamEndpoint
from tsmesh_gateway.stream.hub import Hub
from tsmesh_gateway.stream.listener import LeanListener
from tsmesh_gateway.upstreams import Upstreams

EXPOSED_HEADERS = [
    "X-Request-ID",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "Retry-After",
    "X-Cache",
]


@dataclass
class GatewayClients:
    """One worker's clients: a channel per upstream, the authenticator, the rate limiter, Redis and
    the lean Redis client (its subscriptions feed the micro-cache's generations)."""

    upstreams: Upstreams
    authenticator: Authenticator
    limiter: Limiter
    redis: Any
    lean_redis: Any = None

    async def close(self) -> None:
        await self.upstreams.close()
        await self.redis.aclose()
        if self.lean_redis is not None:
            await self.lean_redis.aclose()


def connect(cfg: GatewayConfig) -> GatewayClients:
    """Start logging and tracing, then open this worker's pools: Redis, one channel per upstream,
    the authenticator (over the auth channel) and the limiter."""
    start_process(cfg.common)
    redis = aioredis.Redis.from_url(
        cfg.common.redis_url, socket_timeout=2.0, socket_connect_timeout=1.0, health_check_interval=30
    )
    upstreams = Upstreams.connect(
        auth_addr=cfg.common.auth_addr,
        ingest_addr=cfg.ingest_addr,
        query_addr=cfg.query_addr,
        ingest_writer_addr=cfg.ingest_writer_addr,
        deadline=cfg.deadline_seconds,
        failures=cfg.breaker_failures,
        reset=cfg.breaker_reset_seconds,
        auth_credential=cfg.common.service_credential,
    )
    source = GrpcAuthSource(upstreams.auth.channel)
    limiter = RateLimiter(redis, prefix=cfg.common.redis_namespace.gateway_rate_prefix)
    return GatewayClients(
        upstreams,
        mesh_authenticator(cfg.common, source, source, revocations=source),
        limiter,
        redis,
        LeanRedis.from_url(cfg.common.redis_url),
    )


def build(cfg: GatewayConfig, clients: GatewayClients, *, worker: bool = False) -> Starlette:
    """The gateway application over ``clients``; background work starts in its lifespan, which
    closes the clients at the end. A Granian ``worker`` also moves what start-up built out of the
    collector's way once serving (:class:`~tsmesh_gateway.stream.hub.HeapFreezer`) and drains on
    :data:`~tsmesh_gateway.drain.DRAIN_SIGNAL`."""
    principals = PrincipalCache(clients.authenticator)
    readiness = Readiness()
    deps = Deps(
        cfg,
        clients.upstreams,
        principals,
        RouteLimits(BatchingLimiter(clients.limiter), cfg.limits),
        _cache(cfg, clients),
    )
    hub = Hub(clients.upstreams.query_stub, cfg.stream, authenticate=clients.authenticator.authenticate)
    clients.authenticator.on_revocation(hub.revoke)
    stream = StreamEndpoint(hub, principals, cfg.stream, client_address=deps.client_address)
    listener = LeanListener(
        stream,
        cfg.http_host,
        cfg.stream.port,
        max_message_bytes=cfg.stream.max_message_bytes,
        max_connections=cfg.stream.max_connections,
        tls=(cfg.tls_cert, cfg.tls_key) if cfg.tls_cert and cfg.tls_key else None,
        gate=stream.gate,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub.start()
        if cfg.stream.listener:
            await listener.start()
        background = [
            (tally.flush_every(1.0), "metric-tallies"),
            (revocation_feed(cfg.common, clients.authenticator, clients.redis), "revocations"),
            (deps.watchdog.run(), "body-watchdog"),
        ]
        if deps.cache.feed is not None:
            background.append((deps.cache.feed.run(), "generation-feed"))
        tasks = [asyncio.get_running_loop().create_task(coro, name=name) for coro, name in background]
        if worker:
            hub.heap.start()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(DRAIN_SIGNAL, lambda: tasks.append(loop.create_task(drain(), name="drain")))
        readiness.serving = True
        try:
            yield
        finally:
            readiness.serving = False
            tally.flush()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await hub.stop()
            await listener.stop()
            await clients.close()

    async def drain() -> None:
        readiness.serving = False
        await hub.stop()  # first: the listener's stop waits for its sockets to close
        await listener.stop()

    queries = QueryCache(deps)
    routes = [*mount(deps, queries, readiness), WebSocketRoute("/v1/stream", stream)]
    app = GatewayApp(routes=routes, middleware=_middleware(cfg), lifespan=lifespan)
    if cfg.fast_path:
        app.fast = FastQueries(deps, queries.handlers(), cors=bool(cfg.cors_origins))
    app.state.hub = hub
    app.state.listener = listener
    app.state.deps = deps
    return app


def _cache(cfg: GatewayConfig, clients: GatewayClients) -> MicroCache:
    caching = cfg.cache_ttl_seconds > 0 and cfg.cache_max_bytes > 0
    # the feed needs the lean client's subscriptions (a redis:// URL); otherwise every read goes to Redis
    feed = None
    if caching and clients.lean_redis is not None:
        lean = clients.lean_redis
        feed = GenerationFeed(
            lambda channel, on_message, on_lost: lean.subscribe(channel, on_message, on_lost, client_name=FEED_NAME),
            cfg.common.redis_namespace,
        )
    return MicroCache(
        GenerationReader(clients.lean_redis or clients.redis, cfg.common.redis_namespace),
        ttl=cfg.cache_ttl_seconds,
        max_bytes=cfg.cache_max_bytes,
        feed=feed,
    )


def _middleware(cfg: GatewayConfig) -> list[Middleware]:
    middleware = [Middleware(EdgeMiddleware)]
    if cfg.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cfg.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Request-ID"],
                expose_headers=EXPOSED_HEADERS,
                max_age=600,
            )
        )
    middleware.append(Middleware(GzipWhenAccepted))
    return middleware


def create_app() -> Starlette:
    """Granian factory (one call per worker): config from the environment, then connect and build."""
    cfg = load_or_exit(GatewayConfig.from_env, os.environ)
    return build(cfg, connect(cfg), worker=True)
