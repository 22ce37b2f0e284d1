"""The live feed: acknowledged batches are PUBLISHed on the tenant's Redis channel (ADR 0200).

Publishing happens after Kafka acknowledged the write and never waits on the database, nor on
Redis: the write's answer goes out while the PUBLISH is in flight. A bounded number of batches may
be in flight, beyond which (or on a Redis error) the live copy is dropped and counted: the points
are durable in Kafka regardless, only the live view misses them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from tsmesh_common.leanredis import LeanRedis, command
from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_ingest.metrics import LIVE_PUBLISH_FAILURES

log = logging.getLogger(__name__)


class LivePublisher:
    """Fire-and-forget PUBLISH of serialized ``tsmesh.v1.PointBatch`` values per tenant.

    Over a plain TCP Redis URL (``lean``), each PUBLISH is written to the socket at once, inside the
    write's own handler: no task, no redis-py machinery (ADR 0208: publish -> query receipt p50
    0.50 -> 0.30 ms). Otherwise (TLS, unix sockets) one sender task pipelines through redis-py:
    everything published while a pipeline is in flight goes out in the next one. At most
    ``max_pending`` batches are in flight; beyond that (or on a Redis error) batches are dropped and
    counted in ``tsmesh_ingest_live_publish_failures_total``.
    """

    def __init__(
        self, redis: Any, namespace: RedisNamespace, max_pending: int = 1000, lean: LeanRedis | None = None
    ) -> None:
        self._redis = redis
        self._channel = namespace.live_channel
        self._lean = lean
        self._max_pending = max_pending
        self._queued: list[tuple[str, bytes]] = []
        self._sender: asyncio.Task[None] | None = None
        self._last: asyncio.Future[Any] | None = None
        self._failing = False

    def publish(self, tenant_id: str, batches: Sequence[bytes]) -> None:
        if not batches:
            return
        lean = self._lean
        if lean is not None:
            if lean.in_flight + len(batches) > self._max_pending:
                LIVE_PUBLISH_FAILURES.inc(len(batches))
                return
            channel = self._channel(tenant_id).encode()
            for value in batches:
                self._last = reply = lean.send(command(b"PUBLISH", channel, value))
                reply.add_done_callback(self._published)
            return
        if len(self._queued) + len(batches) > self._max_pending:
            LIVE_PUBLISH_FAILURES.inc(len(batches))
            return
        channel_name = self._channel(tenant_id)
        self._queued.extend((channel_name, value) for value in batches)
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        try:
            while self._queued:
                queued, self._queued = self._queued, []
                try:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for channel, value in queued:
                            pipe.publish(channel, value)
                        await pipe.execute()
                except (RedisError, OSError) as exc:
                    LIVE_PUBLISH_FAILURES.inc(len(queued))
                    log.warning("live publish failed", extra={"error": type(exc).__name__})
        finally:
            self._sender = None

    def _published(self, reply: asyncio.Future[Any]) -> None:
        exc = ConnectionError("cancelled") if reply.cancelled() else reply.exception()
        if exc is None:
            self._failing = False
            return
        LIVE_PUBLISH_FAILURES.inc()
        if not self._failing:  # once per outage, not once per batch
            self._failing = True
            log.warning("live publish failed", extra={"error": type(exc).__name__})

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait for the publishes still queued or in flight (shutdown): replies come in order, so
        the last one's reply means every one was answered."""
        waiting = {f for f in (self._sender, self._last) if f is not None and not f.done()}
        if waiting:
            await asyncio.wait(waiting, timeout=timeout)
        if self._lean is not None:
            await self._lean.aclose()
