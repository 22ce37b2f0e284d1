"""The live feed: acknowledged batches are PUBLISHed on the tenant's Redis channel (ADR 0200).

Publishing happens after Kafka acknowledged the write and never waits on the database. It runs in
the background so the write's answer does not wait on Redis either; a bounded number of batches
may wait, beyond which (or on a Redis error) the live copy is dropped and counted: the points are
durable in Kafka regardless, only the live view misses them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from tsmesh_common.redis_keys import live_channel
from tsmesh_ingest.metrics import LIVE_PUBLISH_FAILURES

log = logging.getLogger(__name__)


class LivePublisher:
    """Fire-and-forget PUBLISH of serialized ``tsmesh.v1.PointBatch`` values per tenant.

    One sender task at a time: everything published while a pipeline is in flight goes out in the
    next one, so a burst of writes costs one Redis round trip, not a task and a round trip each.
    At most ``max_pending`` batches wait; beyond that (or on a Redis error) batches are dropped and
    counted in ``tsmesh_ingest_live_publish_failures_total``.
    """

    def __init__(self, redis: Any, max_pending: int = 1000) -> None:
        self._redis = redis
        self._max_pending = max_pending
        self._queued: list[tuple[str, bytes]] = []
        self._sender: asyncio.Task[None] | None = None

    def publish(self, tenant_id: str, batches: Sequence[bytes]) -> None:
        if not batches:
            return
        if len(self._queued) + len(batches) > self._max_pending:
            LIVE_PUBLISH_FAILURES.inc(len(batches))
            return
        channel = live_channel(tenant_id)
        self._queued.extend((channel, value) for value in batches)
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

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait for the publishes still queued or in flight (shutdown)."""
        if self._sender is not None:
            await asyncio.wait({self._sender}, timeout=timeout)
