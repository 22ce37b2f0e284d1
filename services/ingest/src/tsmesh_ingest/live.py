"""The live feed: acknowledged batches are PUBLISHed on the tenant's Redis channel (ADR 0200).

Publishing happens after Kafka acknowledged the write and never waits on the database. It runs in
the background so the write's answer does not wait on Redis either; a bounded number of publishes
may be in flight, beyond which (or on a Redis error) the live copy is dropped and counted: the
points are durable in Kafka regardless, only the live view misses them.
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
    """Fire-and-forget PUBLISH of serialized ``tsmesh.v1.PointBatch`` values per tenant."""

    def __init__(self, redis: Any, max_pending: int = 1000) -> None:
        self._redis = redis
        self._max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()

    def publish(self, tenant_id: str, batches: Sequence[bytes]) -> None:
        if not batches:
            return
        if len(self._pending) >= self._max_pending:
            LIVE_PUBLISH_FAILURES.inc()
            return
        task = asyncio.create_task(self._publish(live_channel(tenant_id), batches))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, channel: str, batches: Sequence[bytes]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for value in batches:
                    pipe.publish(channel, value)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            LIVE_PUBLISH_FAILURES.inc()
            log.warning("live publish failed", extra={"error": type(exc).__name__})

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait for in-flight publishes (shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)
