"""Decoding a large fetch shares the event loop with the write in flight (``Writer._collect``): it
yields between records every ``DECODE_SLICE_SECONDS``, so the open transaction's next statement is
not held up for the whole fetch's decoding (ADR 0213: measured as "idle in transaction")."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka.structs import TopicPartition
from testkit import fresh_namespace
from tsmesh.v1 import common_pb2

from tsmesh_ingest.batching import AdaptiveBatcher
from tsmesh_ingest.series_id import series_id
from tsmesh_ingest.writer import Writer

TENANT = "t-slices"
TP = TopicPartition("points", 0)
RECORDS, POINTS, SERIES = 400, 500, 50


class Record:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.value, self.headers = offset, value, ()


class BigFetchConsumer:
    """One fetch holding every record, handed out without suspending (as aiokafka does when its
    background fetcher already holds the records)."""

    def __init__(self) -> None:
        ids = [series_id(TENANT, "m", [("s", str(s))]) for s in range(SERIES)]
        now = time.time_ns()
        self.records = []
        for r in range(RECORDS):
            batch = common_pb2.PointBatch(tenant_id=TENANT)
            for i in range(POINTS):
                batch.points.add(
                    metric="m", labels={"s": str(i % SERIES)}, timestamp_ns=now + r * POINTS + i, value=1.0
                )
                batch.series_ids.append(ids[i % SERIES])
            self.records.append(Record(r, batch.SerializeToString()))

    async def getmany(self, timeout_ms: int = 0) -> dict[Any, list[Record]]:
        out, self.records = self.records, []
        return {TP: out} if out else {}

    def assignment(self) -> set[Any]:
        return {TP}

    def highwater(self, tp: Any) -> int:
        return RECORDS


async def test_decoding_a_large_fetch_gives_the_event_loop_back_between_records() -> None:
    consumer = BigFetchConsumer()
    writer = Writer(
        consumer,
        None,
        "dlq",
        None,
        None,
        AdaptiveBatcher(RECORDS * POINTS, RECORDS * POINTS, 5.0),
        namespace=fresh_namespace(),
    )  # type: ignore[arg-type]
    turns = 0

    async def other_work() -> None:  # stands for the transaction in flight, awaiting its next statement
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_work())
    try:
        items, poison, offsets = await writer._collect()
    finally:
        other.cancel()
    assert sum(len(item.batch.points) for item in items) == RECORDS * POINTS and not poison
    assert offsets == {TP: RECORDS}
    assert turns >= 2  # the other task ran while the fetch was being decoded, more than once
