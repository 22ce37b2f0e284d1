"""Result caches: L1 in-process (TTL + LRU bounded in bytes) and L2 in Redis (shared).

Keys always start with the tenant, so no lookup can reach another tenant's entries. L2 sits
behind a circuit breaker: with Redis down, lookups are misses and stores are skipped, and the
breaker lets a trial through every few seconds so L2 comes back by itself.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.errors import Unavailable
from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_query.metrics import CACHE_BYTES, CACHE_ERRORS, CACHE_EVICTIONS, CACHE_REQUESTS

log = logging.getLogger(__name__)

V = TypeVar("V")


class LruCache(Generic[V]):
    """An LRU map bounded by the summed size of its values, each entry with its own TTL."""

    def __init__(self, layer: str, max_bytes: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._layer = layer
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, int, V]] = OrderedDict()
        self.bytes = 0
        self._hit = CACHE_REQUESTS.labels(layer, "hit")
        self._miss = CACHE_REQUESTS.labels(layer, "miss")
        self._evicted_lru = CACHE_EVICTIONS.labels(layer, "lru")
        self._evicted_ttl = CACHE_EVICTIONS.labels(layer, "ttl")
        self._gauge = CACHE_BYTES.labels(layer)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def enabled(self) -> bool:
        return self._max_bytes > 0

    def get(self, key: str) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            self._miss.inc()
            return None
        if entry[0] <= self._clock():
            self._drop(key)
            self._evicted_ttl.inc()
            self._miss.inc()
            return None
        self._entries.move_to_end(key)
        self._hit.inc()
        return entry[2]

    def put(self, key: str, value: V, size: int, ttl: float) -> None:
        if size > self._max_bytes or ttl <= 0:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (self._clock() + ttl, size, value)
        self.bytes += size
        while self.bytes > self._max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self._evicted_lru.inc()
        self._gauge.set(self.bytes)

    def _drop(self, key: str) -> None:
        _, size, _ = self._entries.pop(key)
        self.bytes -= size
        self._gauge.set(self.bytes)


def redis_key(namespace: RedisNamespace, tenant: str, key: str) -> str:
    """The L2 key of a cache key: tenant in clear (hash-tagged), the rest hashed to a fixed length."""
    return namespace.query_cache_key(tenant, hashlib.blake2b(key.encode(), digest_size=16).hexdigest())


class RedisCache:
    """L2: chunk blobs in Redis with a TTL; any Redis failure degrades to a miss."""

    def __init__(self, redis: Redis, breaker: CircuitBreaker, max_entry_bytes: int, namespace: RedisNamespace) -> None:
        self._redis = redis
        self._namespace = namespace
        self._breaker = breaker
        self._max_entry = max_entry_bytes
        self._hit = CACHE_REQUESTS.labels("l2", "hit")
        self._miss = CACHE_REQUESTS.labels("l2", "miss")
        self._too_large = CACHE_EVICTIONS.labels("l2", "too_large")
        self._errors = CACHE_ERRORS.labels("l2")

    async def get_many(self, tenant: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        names = [redis_key(self._namespace, tenant, k) for k in keys]
        try:
            values: list[Any] = await self._breaker.call(lambda: self._redis.mget(names))
        except (RedisError, OSError, Unavailable) as exc:
            self._errors.inc()
            log.debug("l2 get failed", extra={"error": type(exc).__name__})
            values = [None] * len(keys)
        hits = sum(1 for v in values if v is not None)
        self._hit.inc(hits)
        self._miss.inc(len(keys) - hits)
        return [v if isinstance(v, bytes) else None for v in values]

    async def put_many(self, tenant: str, items: Sequence[tuple[str, bytes, int]]) -> None:
        """Store ``(key, blob, ttl_seconds)`` entries in one pipeline."""
        kept = [(k, b, t) for k, b, t in items if len(b) <= self._max_entry]
        self._too_large.inc(len(items) - len(kept))
        if not kept:
            return

        async def write() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, blob, ttl in kept:
                    pipe.set(redis_key(self._namespace, tenant, key), blob, ex=ttl)
                await pipe.execute()

        try:
            await self._breaker.call(write)
        except (RedisError, OSError, Unavailable) as exc:
            self._errors.inc()
            log.debug("l2 put failed", extra={"error": type(exc).__name__})
