"""The auth service's composition root: ``connect`` opens its pool and Redis clients, ``build``
assembles the server over them (ADR 0012). Auth verifies tokens against its own key ring and
store, so it has no channel to the mesh (:func:`tsmesh_auth.app.build`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from tsmesh_auth.app import build as build_parts
from tsmesh_auth.app import create_app
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.db import create_pool
from tsmesh_common.bootstrap import start_process
from tsmesh_common.errors import TsmeshError, Unavailable
from tsmesh_common.server import GrpcApp


@dataclass
class AuthClients:
    """The pool on schema ``auth``, Redis for throttles and revocations, and a second Redis client
    for the revocation subscription (tests may pass none)."""

    pool: Any
    redis: Any
    pubsub: Any | None

    async def close(self) -> None:
        if self.pubsub is not None:
            await self.pubsub.aclose()
        await self.redis.aclose()
        await self.pool.close()


async def connect(cfg: AuthConfig) -> AuthClients:
    """Start logging and tracing, then open the clients of an auth process."""
    start_process(cfg.common)
    pool = await create_pool(cfg.database_url, cfg.db_pool_size)
    redis = aioredis.Redis.from_url(cfg.common.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
    pubsub = aioredis.Redis.from_url(cfg.common.redis_url, socket_connect_timeout=2.0, health_check_interval=30)
    return AuthClients(pool, redis, pubsub)


async def build(cfg: AuthConfig, clients: AuthClients) -> GrpcApp:
    """The auth server over ``clients`` (which it closes at shutdown); a store that is not ready
    (not migrated, wrong KEK) closes them and raises :class:`Unavailable`."""
    try:
        parts = await build_parts(cfg, clients.pool, clients.redis)
    except TsmeshError as exc:
        await clients.close()
        raise Unavailable(exc.message) from None
    app = create_app(parts, clients.pubsub)
    app.on_shutdown(clients.close)
    return app
