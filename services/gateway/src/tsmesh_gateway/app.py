"""Building the ASGI application: routes, middleware and the per-worker lifespan.

:func:`build_app` wires collaborators that already exist (tests pass their own); :func:`create_app`
is the Granian factory run in each worker: config from the environment, then Redis, channels,
authenticator, limiter, cache and the WebSocket hub, all closed again at shutdown.
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
from starlette.types import Receive, Scope, Send

from tsmesh_common.authn import Authenticator, AuthenticatorConfig, GrpcAuthSource
from tsmesh_common.config import load_or_exit
from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.logs import configure_logging
from tsmesh_common.ratelimit import RateLimiter
from tsmesh_common.redis_keys import REVOCATION_CHANNEL
from tsmesh_common.tracing import setup_tracing
from tsmesh_gateway import tally
from tsmesh_gateway.compression import GzipWhenAccepted
from tsmesh_gateway.config import GatewayConfig
from tsmesh_gateway.deps import Deps
from tsmesh_gateway.edge import EdgeMiddleware
from tsmesh_gateway.fastpath import FastQueries
from tsmesh_gateway.generation_feed import FEED_NAME, GenerationFeed
from tsmesh_gateway.guard import BatchingLimiter, Limiter, PrincipalCache, RouteLimits
from tsmesh_gateway.microcache import GenerationReader, MicroCache
from tsmesh_gateway.querycache import QueryCache
from tsmesh_gateway.routes import mount
from tsmesh_gateway.stream.endpoint import StreamEndpoint
from tsmesh_gateway.stream.hub import Hub
from tsmesh_gateway.stream.listener import LeanListener
from tsmesh_gateway.upstreams import Upstreams


class GatewayApp(Starlette):
    """The Starlette application, with the cached query routes answered first by :class:`FastQueries`."""

    fast: FastQueries | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if fast is not None and scope["type"] == "http" and await fast.serve(scope, receive, send):
            return
        await super().__call__(scope, receive, send)


@dataclass
class Parts:
    """The collaborators of one worker's application."""

    cfg: GatewayConfig
    upstreams: Upstreams
    authenticator: Authenticator
    limiter: Limiter
    redis: Any
    lean_redis: Any = None


def build_app(parts: Parts) -> Starlette:
    """The gateway application over existing collaborators; background work starts in its lifespan."""
    cfg = parts.cfg
    principals = PrincipalCache(parts.authenticator)
    caching = cfg.cache_ttl_seconds > 0 and cfg.cache_max_bytes > 0
    # the feed needs the lean client's subscriptions (a redis:// URL); otherwise every read goes to Redis
    feed = None
    if caching and parts.lean_redis is not None:
        lean = parts.lean_redis
        feed = GenerationFeed(
            lambda channel, on_message, on_lost: lean.subscribe(channel, on_message, on_lost, client_name=FEED_NAME)
        )
    cache = MicroCache(
        GenerationReader(parts.lean_redis or parts.redis),
        ttl=cfg.cache_ttl_seconds,
        max_bytes=cfg.cache_max_bytes,
        feed=feed,
    )
    deps = Deps(cfg, parts.upstreams, principals, RouteLimits(BatchingLimiter(parts.limiter), cfg.limits), cache)
    hub = Hub(parts.upstreams.query_stub, cfg.stream, authenticate=parts.authenticator.authenticate)
    parts.authenticator.on_revocation(hub.revoke)
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
        watchdog = asyncio.get_running_loop().create_task(deps.watchdog.run(), name="body-watchdog")
        follower = asyncio.get_running_loop().create_task(
            parts.authenticator.follow_revocations(parts.redis, REVOCATION_CHANNEL), name="revocations"
        )
        flusher = asyncio.get_running_loop().create_task(tally.flush_every(1.0), name="metric-tallies")
        tasks = [flusher, follower, watchdog]
        if feed is not None:
            tasks.append(asyncio.get_running_loop().create_task(feed.run(), name="generation-feed"))
        try:
            yield
        finally:
            tally.flush()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await hub.stop()
            await listener.stop()

    queries = QueryCache(deps)
    routes = [*mount(deps, queries), WebSocketRoute("/v1/stream", stream)]
    middleware = [Middleware(EdgeMiddleware)]
    if cfg.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(cfg.cors_origins),
                allow_credentials=True,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding", "X-Request-ID"],
                expose_headers=[
                    "X-Request-ID",
                    "RateLimit-Limit",
                    "RateLimit-Remaining",
                    "RateLimit-Reset",
                    "Retry-After",
                    "X-Cache",
                ],
                max_age=600,
            )
        )
    middleware.append(Middleware(GzipWhenAccepted))
    app = GatewayApp(routes=routes, middleware=middleware, lifespan=lifespan)
    if cfg.fast_path:
        app.fast = FastQueries(deps, queries.handlers(), cors=bool(cfg.cors_origins))
    app.state.hub = hub
    app.state.listener = listener
    app.state.deps = deps
    return app


def connect(cfg: GatewayConfig) -> Parts:
    """Open this worker's pools: Redis, one channel per upstream, the authenticator and limiter."""
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
    )
    source = GrpcAuthSource(upstreams.auth.channel)
    authenticator = Authenticator(
        AuthenticatorConfig(issuer=cfg.common.jwt_issuer, audience=cfg.common.jwt_audience), source, source
    )
    limiter = RateLimiter(redis, prefix="tsmesh:gw:rl")
    return Parts(cfg, upstreams, authenticator, limiter, redis, LeanRedis.from_url(cfg.common.redis_url))


def create_app() -> Starlette:
    """Granian factory (one call per worker): the composition root of a worker."""
    cfg = load_or_exit(GatewayConfig.from_env, os.environ)
    configure_logging(cfg.common.service, cfg.common.log_level)
    setup_tracing(cfg.common.service, cfg.common.otlp_endpoint)
    parts = connect(cfg)
    app = build_app(parts)
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(app_: Starlette) -> AsyncIterator[None]:
        async with inner(app_):
            # everything built so far lives as long as the worker: out of the collector's way
            app_.state.hub.heap.start()
            try:
                yield
            finally:
                await parts.upstreams.close()
                await parts.redis.aclose()
                if parts.lean_redis is not None:
                    await parts.lean_redis.aclose()

    app.router.lifespan_context = lifespan
    return app
