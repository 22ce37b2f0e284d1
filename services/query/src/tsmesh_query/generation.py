"""Reads tenants' data generations from Redis, batching concurrent readers without going stale.

A caller only joins a read that has not been sent yet, so every answer was read from Redis after
the caller asked: a generation bump that finished before a query started is always seen
(read-your-writes). At most one MGET is in flight; callers arriving meanwhile share the next one.
When Redis is unreachable the generation is unknown (``None``) and callers bypass recent caches.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.errors import Unavailable
from tsmesh_common.redis_keys import data_generation_key

log = logging.getLogger(__name__)


class GenerationReader:
    """``await get(tenant)`` -> the tenant's current data generation, or None if Redis is down."""

    def __init__(self, redis: Redis, breaker: CircuitBreaker) -> None:
        self._redis = redis
        self._breaker = breaker
        self._waiting: dict[str, list[asyncio.Future[int | None]]] = {}
        self._in_flight = False

    async def get(self, tenant: str) -> int | None:
        future: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(tenant, []).append(future)
        if not self._in_flight:
            self._in_flight = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, {}
                tenants = list(batch)
                values = await self._read(tenants)
                for tenant, value in zip(tenants, values, strict=True):
                    for future in batch[tenant]:
                        if not future.done():
                            future.set_result(value)
        finally:
            self._in_flight = False

    async def _read(self, tenants: list[str]) -> list[int | None]:
        keys = [data_generation_key(t) for t in tenants]
        try:
            raw = await self._breaker.call(lambda: self._redis.mget(keys))
        except (RedisError, OSError, Unavailable) as exc:
            log.debug("generation read failed", extra={"error": type(exc).__name__})
            return [None] * len(tenants)
        return [int(v) if v is not None else 0 for v in raw]
