"""Reads tenants' data and late generations from Redis, batching concurrent readers without going stale.

A caller only joins a read that has not been sent yet, so every answer was read from Redis after
the caller asked: a generation bump that finished before a query started is always seen
(read-your-writes). At most one MGET is in flight; callers arriving meanwhile share the next one,
which reads both generations of every waiting tenant. It runs on one dedicated connection made by
the client's pool (same address, credentials, database and timeouts), without the client's
per-command pool and retry machinery: this read happens on every QueryRange call. When Redis is
unreachable the generations are unknown (``None``) and callers bypass the caches.

A missing key (a tenant never written, or Redis restarted without persistence) is set to the
Redis server's clock by the namespace's ``init_generations_lua`` and read as that value, never as 0: an entry
cached under a generation from before a loss must not match again (ADR 0305). Only a read that
found a key missing runs the script; the usual read is the one MGET.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.errors import Unavailable
from tsmesh_common.leanredis import command
from tsmesh_common.redis_keys import RedisNamespace

log = logging.getLogger(__name__)

# Loop iterations the reader yields before sending an MGET, so that calls already on their way
# through the loop share it (a gRPC call needs a few iterations from arrival to its generation
# read): the MGET goes once BATCH_IDLE_TICKS iterations in a row brought no new caller, or after
# BATCH_MAX_TICKS in all. Under load calls keep arriving and batches grow: at 32 concurrent 15-20
# calls share an MGET instead of ~3 with a fixed 10 iterations, and an MGET (two syscalls, a
# Redis wake-up, a reply parse) costs far more than a loop iteration. When the last batch had a
# single caller and no caller arrived while an MGET was in flight (no concurrency), the wait is only
# LONE_IDLE_TICKS idle iterations, so a lone call is not held up.
# Every caller still asked before the MGET was sent.
BATCH_IDLE_TICKS = 32
LONE_IDLE_TICKS = 2
BATCH_MAX_TICKS = 128


class Generations(NamedTuple):
    """A tenant's generations: ``data`` moves on every commit, ``late`` on commits of late points."""

    data: int
    late: int


class GenerationReader:
    """``await get(tenant)`` -> the tenant's current generations, or None if Redis is down."""

    def __init__(self, redis: Redis, breaker: CircuitBreaker, namespace: RedisNamespace) -> None:
        self._redis = redis
        self._namespace = namespace
        self._init_script = namespace.init_generations_lua.encode()
        self._breaker = breaker
        self._waiting: dict[str, list[asyncio.Future[Generations | None]]] = {}
        self._in_flight = False
        self._drainer: asyncio.Task[None] | None = None
        self._conn: Any = None
        self._arrivals = 0
        self._concurrent = False  # the last batch had several callers
        self.reads = 0

    async def get(self, tenant: str) -> Generations | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Generations | None] = loop.create_future()
        self._arrivals += 1
        waiting = self._waiting.get(tenant)
        if waiting is None:
            self._waiting[tenant] = [future]
        else:
            waiting.append(future)
        if not self._in_flight:
            self._in_flight = True
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        batch: dict[str, list[asyncio.Future[Generations | None]]] = {}
        try:
            idle_ticks = BATCH_IDLE_TICKS if self._concurrent else LONE_IDLE_TICKS
            while self._waiting:
                await self._gather_callers(idle_ticks)
                idle_ticks = BATCH_IDLE_TICKS  # callers arrived while the last MGET was in flight
                batch, self._waiting = self._waiting, {}
                self._concurrent = sum(len(futures) for futures in batch.values()) > 1
                tenants = list(batch)
                values = await self._read(tenants)
                for tenant, value in zip(tenants, values, strict=True):
                    for future in batch[tenant]:
                        if not future.done():
                            future.set_result(value)
        finally:
            self._in_flight = False
            for futures in (*batch.values(), *self._waiting.values()):  # only if interrupted: unknown
                for future in futures:
                    if not future.done():
                        future.set_result(None)
            self._waiting = {}

    async def _gather_callers(self, idle_ticks: int) -> None:
        """Yield to the loop until ``idle_ticks`` iterations in a row brought no new caller."""
        idle = ticks = 0
        seen = self._arrivals
        while idle < idle_ticks and ticks < BATCH_MAX_TICKS:
            await asyncio.sleep(0)
            ticks += 1
            if self._arrivals == seen:
                idle += 1
            else:
                seen, idle = self._arrivals, 0

    async def _read(self, tenants: list[str]) -> list[Generations | None]:
        keys: list[str] = []
        ns = self._namespace
        for tenant in tenants:
            keys += (ns.data_generation_key(tenant), ns.late_generation_key(tenant))
        self.reads += 1
        try:
            raw = await self._breaker.call(lambda: self._fetch(keys))
        except (RedisError, OSError, Unavailable) as exc:
            log.debug("generation read failed", extra={"error": type(exc).__name__})
            return [None] * len(tenants)
        try:
            return [Generations(int(raw[i]), int(raw[i + 1])) for i in range(0, len(raw), 2)]
        except (TypeError, ValueError):
            log.warning("unreadable generation value; bypassing caches")
            return [None] * len(tenants)

    async def _fetch(self, keys: list[str]) -> list[Any]:
        """The values of ``keys``, setting the missing ones first (one MGET, plus one EVAL if some were)."""
        encoded = [key.encode() for key in keys]
        values = await self._command(command(b"MGET", *encoded))
        missing = [i for i, value in enumerate(values) if value is None]
        if missing:
            count = str(len(missing)).encode()
            found = await self._command(command(b"EVAL", self._init_script, count, *(encoded[i] for i in missing)))
            for i, value in zip(missing, found, strict=True):
                values[i] = value
        return values

    async def _command(self, packed: bytes) -> list[Any]:
        conn = self._conn
        if conn is None:
            conn = self._redis.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            self._conn = conn
        try:
            await conn.send_packed_command(packed, check_health=False)
            values: list[Any] = await conn.read_response()
        except BaseException:
            self._conn = None
            await asyncio.shield(conn.disconnect())
            raise
        return values

    async def close(self) -> None:
        """Close the dedicated connection (at shutdown)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.disconnect()
