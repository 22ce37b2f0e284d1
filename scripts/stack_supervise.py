"""Keeping the local stack alive and draining it: crashed services restarted with backoff (as
Kubernetes would), and the bundled broker stopped only once the writer has consumed its log.

The bundled broker keeps its log in memory: stopping it with records the writer has not committed
loses acknowledged points (issue 17, ADR 0209). :func:`unconsumed` measures what is left.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 30.0
HEALTHY_RESET_S = 60.0


class Backoff:
    """Per-service restart delays: doubling while a service keeps crashing, reset once it has
    stayed up for :data:`HEALTHY_RESET_S`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._delay: dict[str, float] = {}
        self._started: dict[str, float] = {}

    def next_delay(self, name: str) -> float:
        """The delay before restarting ``name``, which has just exited."""
        now = self._clock()
        previous = self._delay.get(name)
        if previous is None or now - self._started.get(name, now) >= HEALTHY_RESET_S:
            delay = BACKOFF_FIRST_S
        else:
            delay = min(previous * 2, BACKOFF_MAX_S)
        self._delay[name] = delay
        return delay

    def started(self, name: str) -> None:
        """Record that ``name`` was (re)started now."""
        self._started[name] = self._clock()


async def _unconsumed(bootstrap: str, topic: str, group: str) -> int:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.structs import TopicPartition

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, request_timeout_ms=2000)
    await admin.start()
    try:
        await consumer.start()
        try:
            partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not partitions:
                await consumer.topics()
                partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
            ends = await consumer.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        finally:
            await consumer.stop()
    finally:
        await admin.close()
    left = 0
    for tp, end in ends.items():
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        left += max(0, end - done)
    return left


def unconsumed(bootstrap: str, topic: str, group: str, timeout_s: float = 5.0) -> int:
    """Records of ``topic`` past ``group``'s committed offsets (-1 when the broker does not answer).

    The check runs on an event loop of its own in a worker thread, so a caller that is itself on a
    running loop (an async test or benchmark stopping its stack) gets the same answer."""

    def check() -> int:
        return asyncio.run(asyncio.wait_for(_unconsumed(bootstrap, topic, group), timeout_s))

    try:
        with ThreadPoolExecutor(1, thread_name_prefix="unconsumed") as worker:
            return worker.submit(check).result()
    except Exception:  # noqa: BLE001 - any broker failure means "unknown"
        return -1
