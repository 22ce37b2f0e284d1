"""The writer closes every Kafka client when it stops, even when stopping the consumer is cancelled
(at shutdown with the broker gone): a DLQ producer left open leaks its connections and warns from
``__del__``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from testkit import fresh_namespace

from tsmesh_ingest.batching import AdaptiveBatcher
from tsmesh_ingest.writer import Writer


class Client:
    """A Kafka client that starts at once; ``stop_raises`` is what its ``stop`` raises."""

    def __init__(self, stop_raises: BaseException | None = None) -> None:
        self.started = asyncio.Event()
        self.stopped = False
        self._stop_raises = stop_raises

    async def start(self) -> None:
        self.started.set()

    async def stop(self) -> None:
        self.stopped = True
        if self._stop_raises is not None:
            raise self._stop_raises

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        await asyncio.Event().wait()
        return {}


@pytest.mark.parametrize("stop_raises", [asyncio.CancelledError(), RuntimeError("broker gone")])
async def test_the_dlq_producer_is_stopped_when_stopping_the_consumer_fails(stop_raises: BaseException) -> None:
    consumer, dlq = Client(stop_raises), Client()
    writer = Writer(consumer, dlq, "dlq", None, None, AdaptiveBatcher(1, 10, 0.05, 0.0), namespace=fresh_namespace())  # type: ignore[arg-type]
    running = asyncio.create_task(writer.run())
    await asyncio.wait_for(consumer.started.wait(), 5)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert consumer.stopped
    assert dlq.stopped
