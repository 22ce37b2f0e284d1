"""How long the writer collects a batch (``Writer._collect`` with the batcher's linger): a trickle of
small records is gathered for ``linger_seconds`` after the first one, a batch that reaches its target
goes at once, and with no linger every record is written as it comes (the behaviour before ADR 0207)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from tsmesh.v1 import common_pb2

from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_ingest.batching import AdaptiveBatcher
from tsmesh_ingest.series_id import series_id
from tsmesh_ingest.writer import Writer

TENANT = "t-linger"
TP = TopicPartition("points", 0)


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value, self.headers = offset, value, ()


class TrickleConsumer:
    """Hands out the records released so far; the high-water mark is what was released."""

    def __init__(self) -> None:
        self.ready: deque[Record] = deque()
        self.released = 0
        self.arrived = asyncio.Event()

    def release(self, points: int) -> None:
        batch = common_pb2.PointBatch(tenant_id=TENANT)
        for i in range(points):
            batch.points.add(metric="m", labels={"i": str(i)}, timestamp_ns=time.time_ns(), value=1.0)
            batch.series_ids.append(series_id(TENANT, "m", [("i", str(i))]))
        self.ready.append(Record(self.released, batch.SerializeToString()))
        self.released += 1
        self.arrived.set()

    async def getmany(self, timeout_ms: int = 0) -> dict[Any, list[Record]]:
        if not self.ready:
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout_ms / 1000)
            except TimeoutError:
                return {}
        out = list(self.ready)
        self.ready.clear()
        return {TP: out}

    def assignment(self) -> set[Any]:
        return {TP}

    def highwater(self, tp: Any) -> int:
        return self.released


def collector(consumer: TrickleConsumer, batcher: AdaptiveBatcher) -> Writer:
    return Writer(consumer, None, "dlq", None, None, batcher, namespace=RedisNamespace())  # type: ignore[arg-type]


async def test_a_trickle_is_gathered_for_the_linger_then_written_before_max_wait() -> None:
    consumer = TrickleConsumer()
    consumer.release(10)
    began = time.monotonic()
    collecting = asyncio.create_task(collector(consumer, AdaptiveBatcher(1000, 5000, 30.0, 0.3))._collect())
    await asyncio.sleep(0.02)
    consumer.release(10)  # nothing was waiting when the first came: it still joins this batch
    items, poison, offsets = await collecting
    assert [len(item.batch.points) for item in items] == [10, 10] and not poison
    assert offsets == {TP: 2}
    assert time.monotonic() - began < 30.0  # ended by the linger, not by max_wait_seconds


async def test_a_batch_that_reaches_its_target_does_not_linger() -> None:
    consumer = TrickleConsumer()
    consumer.release(1000)
    began = time.monotonic()
    items, _, offsets = await collector(consumer, AdaptiveBatcher(1000, 5000, 30.0, 30.0))._collect()
    assert len(items) == 1 and offsets == {TP: 1}
    assert time.monotonic() - began < 30.0


async def test_without_linger_each_record_is_written_as_it_comes() -> None:
    consumer = TrickleConsumer()
    consumer.release(10)
    items, _, offsets = await collector(consumer, AdaptiveBatcher(1000, 5000, 30.0, 0.0))._collect()
    assert len(items) == 1 and offsets == {TP: 1}


def test_the_linger_is_bounded_by_max_wait() -> None:
    with pytest.raises(ValueError, match="linger"):
        AdaptiveBatcher(10, 100, 0.1, 0.2)
