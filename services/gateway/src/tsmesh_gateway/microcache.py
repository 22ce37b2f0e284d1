"""A short-lived, tenant-scoped cache of rendered query answers, keyed on the tenant's data generation.

An answer is stored with the generation read BEFORE the upstream call, and served only while the
generation in Redis is unchanged: once the ingest writer has committed and bumped, the next read
misses. A tenant's generation comes from the worker's :class:`~tsmesh_gateway.generation_feed.GenerationFeed`
(a local copy kept current by Redis pub/sub, no round trip) once the feed knows it, and otherwise from
Redis: concurrent reads share one in-flight MGET, and each waiter joins only a read sent after it
arrived. Without Redis the cache is bypassed.

A missing generation key (a tenant never written, or Redis restarted without persistence) is set to
the Redis server's clock by the namespace's ``init_generations_lua`` and read as that value, never as a constant: an
answer cached before the loss must not match again (ADR 0305). Only a read that found a key missing
runs the script.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_gateway.compression import gzip_body
from tsmesh_gateway.generation_feed import GenerationFeed
from tsmesh_gateway.tally import TallyCounter

log = logging.getLogger(__name__)

LOOKUPS = Counter("tsmesh_gateway_cache_lookups_total", "Micro-cache lookups", ["outcome"])
_HIT, _MISS, _BYPASS = (
    TallyCounter(LOOKUPS.labels("hit")),
    TallyCounter(LOOKUPS.labels("miss")),
    LOOKUPS.labels("bypass"),
)
EVICTIONS = Counter(
    "tsmesh_gateway_cache_evictions_total", "Micro-cache answers dropped to stay within TSMESH_GATEWAY_CACHE_MAX_BYTES"
)
# Bytes of bookkeeping per entry, counted with the body, key and tenant: the body's and key's bytes headers,
# the key tuple, the OrderedDict slot and node, the entry object, its expiry float and generation int
# (tracemalloc: 307-335 bytes per entry beyond the lengths counted, for 1,000-5,000 entries;
# tests/gateway/test_microcache.py keeps the accounting within 10% of it).
ENTRY_OVERHEAD = 320
BYTES_OVERHEAD = 33  # the header of a bytes object (sys.getsizeof(b"")), counted with a gzipped body
GENERATION_FETCHES = Counter(
    "tsmesh_gateway_generation_fetches_total", "Redis reads of data generations (each shared by concurrent requests)"
)


class _Shared(asyncio.Future[Any]):
    """A future awaited by every request of a batch: one waiter's cancellation must not cancel it for
    the others (the cancelled task is still cancelled, when the fetch completes)."""

    def cancel(self, msg: Any = None) -> bool:
        return False


class GenerationReader:
    """Reads tenants' data generations, coalescing concurrent reads into one in-flight MGET.

    A read joins the NEXT MGET, never one already sent: reads arriving while an MGET is in flight
    wait for it to finish and then share a single follow-up MGET. So every answer was read after
    the request arrived (a generation bumped before that is always seen), and under load Redis
    sees one MGET per round trip instead of one per request, with no timer delay when idle. The
    reads of one tenant in one batch share ONE future (no per-request future or task).
    """

    def __init__(self, redis: Any, namespace: RedisNamespace, timeout: float = 0.25) -> None:
        self._redis = redis
        self._key = namespace.data_generation_key
        self._init_script = namespace.init_generations_lua
        self._timeout = timeout
        self._pending: dict[str, _Shared] = {}
        self._busy = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.fetches = 0

    def read(self, tenant_id: str) -> asyncio.Future[bytes | None]:
        """The tenant's generation, to await (a missing key is set first); fails when Redis is
        unreachable."""
        future = self._pending.get(tenant_id)
        if future is None:
            loop = self._loop
            if loop is None or loop.is_closed():  # looked up once: asyncio.get_running_loop() is a getpid() on 3.11
                loop = self._loop = asyncio.get_running_loop()
            future = self._pending[tenant_id] = _Shared(loop=loop)
            if not self._busy:
                self._busy = True
                loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        batch, self._pending = self._pending, {}
        if not batch:
            self._busy = False
            return
        self.fetches += 1
        GENERATION_FETCHES.inc()
        assert self._loop is not None
        task = self._loop.create_task(self._fetch(batch))
        task.add_done_callback(self._fetched)

    def _fetched(self, task: asyncio.Future[None]) -> None:
        _consume(task)
        self._flush()

    async def _fetch(self, batch: dict[str, _Shared]) -> None:
        tenants = list(batch)
        keys = [self._key(t) for t in tenants]
        try:
            async with asyncio.timeout(self._timeout):
                if len(keys) == 1:
                    values = [await self._redis.get(keys[0])]
                else:
                    values = await self._redis.mget(keys)
                missing = [i for i, value in enumerate(values) if value is None]
                if missing:
                    found = await self._redis.eval(self._init_script, len(missing), *(keys[i] for i in missing))
                    for i, value in zip(missing, found, strict=True):
                        values[i] = value
        except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
            for future in batch.values():
                future.set_exception(exc)
                future.exception()  # retrieved: a batch nobody awaits any more logs nothing
            return
        for tenant, value in zip(tenants, values, strict=True):
            batch[tenant].set_result(value)


def _consume(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("generation fetch failed", extra={"error": type(task.exception()).__name__})


class _Entry:
    """One cached answer: the plain body and, once a client accepting gzip asked, the gzipped one."""

    __slots__ = ("body", "expires", "generation", "gzipped")

    def __init__(self, generation: int, expires: float, body: bytes) -> None:
        self.generation = generation
        self.expires = expires
        self.body = body
        self.gzipped: bytes | None = None


class MicroCache:
    """LRU of ``(tenant, key) -> (generation, expiry, body[, gzipped body])``, never shared across
    tenants, bounded in bytes: bodies (and gzipped bodies) plus :data:`ENTRY_OVERHEAD` per entry stay
    within ``max_bytes`` (least recently used answers are evicted first, counted by
    ``tsmesh_gateway_cache_evictions_total``); an answer larger than an eighth of the budget is not
    cached at all."""

    def __init__(
        self,
        generations: GenerationReader,
        *,
        ttl: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        feed: GenerationFeed | None = None,
    ) -> None:
        self._generations = generations
        self.feed = feed
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, bytes], _Entry] = OrderedDict()
        self.size_bytes = 0

    @property
    def enabled(self) -> bool:
        return self._ttl > 0 and self._max_bytes > 0

    def current(self, tenant_id: str) -> int | None:
        """The generation from the feed's local copy, without waiting; None: await :meth:`generation`."""
        feed = self.feed
        return None if feed is None else feed.current(tenant_id)

    async def generation(self, tenant_id: str) -> int | None:
        """The current generation read from Redis (and taught to the feed), or None when it cannot be
        read (the cache is then bypassed)."""
        if not self.enabled:
            return None
        feed = self.feed
        token = -1 if feed is None else feed.track(tenant_id)
        try:
            value = int(await self._generations.read(tenant_id) or b"")
        except Exception:  # noqa: BLE001 - Redis trouble (or a value that is no number) means no caching
            _BYPASS.inc()
            return None
        if feed is not None:
            feed.learn(tenant_id, value, token)
        return value

    def get(self, tenant_id: str, key: bytes, generation: int) -> bytes | None:
        slot = (tenant_id, key)
        entry = self._entries.get(slot)
        if entry is None or entry.generation != generation or entry.expires < self._clock():
            _MISS.n += 1
            return None
        _HIT.n += 1
        self._entries.move_to_end(slot)
        return entry.body

    def gzipped(self, tenant_id: str, key: bytes, body: bytes) -> bytes:
        """``body`` gzipped: compressed once and kept beside it (counted in the budget) while the
        entry of ``(tenant_id, key)`` holds this very body; compressed uncached otherwise."""
        entry = self._entries.get((tenant_id, key))
        if entry is None or entry.body is not body:
            return gzip_body(body)
        if entry.gzipped is None:
            entry.gzipped = gzipped = gzip_body(body)
            self.size_bytes += len(gzipped) + BYTES_OVERHEAD
            self._evict()
            return gzipped
        return entry.gzipped

    def put(self, tenant_id: str, key: bytes, generation: int, body: bytes) -> None:
        entry = _Entry(generation, self._clock() + self._ttl, body)
        cost = _cost(tenant_id, key, entry)
        if cost > self._max_bytes // 8:
            return
        old = self._entries.pop((tenant_id, key), None)
        if old is not None:
            self.size_bytes -= _cost(tenant_id, key, old)
        self._entries[(tenant_id, key)] = entry
        self.size_bytes += cost
        self._evict()

    def _evict(self) -> None:
        while self.size_bytes > self._max_bytes:
            (tenant_id, key), evicted = self._entries.popitem(last=False)
            self.size_bytes -= _cost(tenant_id, key, evicted)
            EVICTIONS.inc()


def _cost(tenant_id: str, key: bytes, entry: _Entry) -> int:
    cost = len(entry.body) + len(key) + len(tenant_id) + ENTRY_OVERHEAD
    return cost if entry.gzipped is None else cost + len(entry.gzipped) + BYTES_OVERHEAD
