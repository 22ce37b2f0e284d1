"""The writer: a Kafka consumer-group member that stores batches in PostgreSQL.

Per batch, in this order: poison records to the dead-letter topic (acknowledged), one database
transaction for the rest, the tenants' data generations bumped in Redis (retried until Redis takes
them: caches must never serve a result that omits a committed point), then the consumer offsets
committed. A crash anywhere before the offset commit redelivers the batch, which storage absorbs
(unique (series_id, ts), last write wins). While PostgreSQL is unreachable the writer retries the
same batch with capped exponential backoff and fetches at most one batch ahead: nothing is skipped
or lost. A COPY refused with "no partition" (another replica's retention dropped a day this one
had cached) forgets the cached partitions, re-creates them and retries; content the database truly
refuses is bisected down to single points, and only those are dead-lettered.

Every connection-level failure (``tsmesh_ingest.db``: asyncpg client/protocol errors, sockets,
timeouts, server shutdown) is retried on a fresh connection, the failed one discarded. Only
cancellation ends :meth:`Writer.run`; an unexpected error escapes it so that the process stops
(non-zero) and the uncommitted batch is redelivered to a fresh writer.

Collection (fetch + decode, Python CPU) of the next batch overlaps the write of the previous one
(PostgreSQL CPU), decoding in slices of at most ``DECODE_SLICE_SECONDS`` so that the transaction in
flight gets the event loop back between its statements; writes and offset commits stay strictly
sequential, in fetch order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import asyncpg
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError
from tsmesh.v1 import common_pb2

from tsmesh_common.redis_keys import LATE_WRITE_SECONDS, RedisNamespace
from tsmesh_ingest.batching import AdaptiveBatcher
from tsmesh_ingest.db import is_transient
from tsmesh_ingest.metrics import CONSUMER_LAG, DB_RETRIES, DLQ_TOTAL, GENERATION_RETRIES
from tsmesh_ingest.records import Poison, RecordDecoder
from tsmesh_ingest.store import Item, PointStore, SeriesClash, WriterHooks

log = logging.getLogger(__name__)

NO_PARTITION_RETRIES = 3
# Decoding the next batch shares the event loop with the write of the previous one: it yields at
# least this often, so the open transaction never waits on a whole fetch's decoding (ADR 0213).
DECODE_SLICE_SECONDS = 0.002


def is_missing_partition(exc: BaseException) -> bool:
    """A row fell on a day partition that does not exist (dropped or never created)."""
    return isinstance(exc, asyncpg.CheckViolationError) and "no partition of relation" in str(exc)


class Writer:
    """Consumes ``tsmesh.points.v1`` and writes it; see the module docstring for the guarantees."""

    def __init__(
        self,
        consumer: Any,
        dlq_producer: Any,
        dlq_topic: str,
        store: PointStore,
        redis: Any,
        batcher: AdaptiveBatcher,
        *,
        namespace: RedisNamespace,
        retry_max_seconds: float = 5.0,
        hooks: WriterHooks | None = None,
        late_window_seconds: float = LATE_WRITE_SECONDS,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._consumer = consumer
        self._dlq = dlq_producer
        self._dlq_topic = dlq_topic
        self._store = store
        self._redis = redis
        self._namespace = namespace
        self._batcher = batcher
        self._retry_max = retry_max_seconds
        self._hooks = hooks or WriterHooks()
        self._decoder = RecordDecoder()
        self._late_window_ns = int(late_window_seconds * 1_000_000_000)
        self._clock_ns = clock_ns
        self.committed_batches = 0

    async def run(self) -> None:
        """Start the consumer and DLQ producer (retrying while the broker is down), then loop."""
        try:
            await _start_retrying(self._dlq, "dlq producer")
            await _start_retrying(self._consumer, "consumer")
            writing: asyncio.Task[int] | None = None
            try:
                while True:
                    collected = await self._collect()
                    if writing is not None:
                        await writing
                        writing = None
                    if collected[2]:
                        writing = asyncio.create_task(self._write(*collected))
            finally:
                if writing is not None:
                    writing.cancel()
        finally:
            await _stop_all((self._consumer, self._dlq))

    async def step(self) -> int:
        """Collect one adaptive batch and write it; returns the rows stored."""
        items, poison, offsets = await self._collect()
        if not offsets:
            return 0
        return await self._write(items, poison, offsets)

    async def _write(self, items: list[Item], poison: list[Poison], offsets: dict[Any, int]) -> int:
        """Dead letters, the transaction, generation bumps, then the offset commit."""
        if poison:
            await self._dead_letter(poison)
        rows = await self._store_retrying(items) if items else 0
        await self._bump_generations(items)
        if self._hooks.after_commit is not None:
            await self._hooks.after_commit()
        try:
            await self._consumer.commit(offsets)
        except Exception as exc:  # noqa: BLE001 - a rebalance: the batch is redelivered, storage absorbs it
            log.warning("offset commit failed, batch will be redelivered", extra={"error": type(exc).__name__})
        self.committed_batches += 1
        return rows

    async def _collect(self) -> tuple[list[Item], list[Poison], dict[Any, int]]:
        batcher = self._batcher
        loop = asyncio.get_running_loop()
        deadline = loop.time() + batcher.max_wait_seconds
        items: list[Item] = []
        poison: list[Poison] = []
        offsets: dict[Any, int] = {}
        rows = 0
        lagging = False
        linger_until = deadline
        while True:
            until = deadline if lagging else min(deadline, linger_until)
            timeout_ms = (
                int(batcher.max_wait_seconds * 1000) if not offsets else int(max(0.0, until - loop.time()) * 1000)
            )
            first = not offsets
            try:
                fetched = await self._consumer.getmany(timeout_ms=timeout_ms)
            except KafkaError as exc:
                log.warning("fetch failed, retrying", extra={"error": type(exc).__name__})
                await asyncio.sleep(min(0.5, self._retry_max))
                continue
            yielded = loop.time()
            for tp, records in fetched.items():
                for record in records:
                    if loop.time() - yielded >= DECODE_SLICE_SECONDS:
                        await asyncio.sleep(0)  # let the batch being written send its next statement
                        yielded = loop.time()
                    decoded = self._decoder.decode(record.value, list(record.headers or ()))
                    if isinstance(decoded, Poison):
                        poison.append(decoded)
                    else:
                        items.append(decoded)
                        rows += len(decoded.batch.points)
                if records:
                    offsets[tp] = records[-1].offset + 1
            if not offsets:
                return items, poison, offsets
            if first:
                linger_until = loop.time() + batcher.linger_seconds
            lagging = self._lagging(offsets)
            now = loop.time()
            if batcher.full(rows) or now >= deadline or (not lagging and now >= linger_until):
                break
        batcher.observe(rows, lagging)
        return items, poison, offsets

    def _lagging(self, offsets: dict[Any, int]) -> bool:
        behind = 0
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            position = offsets.get(tp)
            if end is None or position is None:
                continue
            lag = max(0, end - position)
            CONSUMER_LAG.labels(str(tp.partition)).set(lag)
            behind += lag
        return behind > 0

    async def _store_retrying(self, items: Sequence[Item]) -> int:
        delay = 0.05
        no_partition = 0
        while True:
            try:
                return await self._store.write(items)
            except Exception as exc:
                if is_missing_partition(exc) and no_partition < NO_PARTITION_RETRIES:
                    no_partition += 1
                    log.warning("partition missing, re-ensuring partitions", extra={"attempt": no_partition})
                    self._store.forget_partitions()
                    continue
                if is_transient(exc):
                    DB_RETRIES.inc()
                    log.warning(
                        "database unavailable, retrying batch", extra={"error": type(exc).__name__, "delay": delay}
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
                    continue
                if not isinstance(exc, SeriesClash | asyncpg.PostgresError):
                    raise
                return await self._isolate(items, exc)

    async def _isolate(self, items: Sequence[Item], exc: BaseException) -> int:
        """Content refused by the database: bisect the records, then a record's points, storing
        the halves separately (in order, so last write still wins) and dead-lettering single points
        that are refused on their own."""
        if len(items) > 1:
            mid = len(items) // 2
            return await self._store_retrying(items[:mid]) + await self._store_retrying(items[mid:])
        item = items[0]
        if len(item.tss) > 1:
            left, right = split_item(item)
            return await self._store_retrying([left]) + await self._store_retrying([right])
        code = "series_clash" if isinstance(exc, SeriesClash) else "constraint"
        await self._dead_letter([Poison(item.raw, item.headers, code, str(exc)[:500])])
        return 0

    async def _dead_letter(self, poison: Sequence[Poison]) -> None:
        delay = 0.1
        for entry in poison:
            headers = [*[(k, v) for k, v in entry.headers if k != "reason"], ("reason", entry.reason.encode())]
            while True:
                try:
                    await self._dlq.send_and_wait(self._dlq_topic, entry.value, headers=headers)
                    break
                except Exception as exc:  # noqa: BLE001 - keep the poison until the DLQ has it
                    log.warning("dead-letter send failed, retrying", extra={"error": type(exc).__name__})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._retry_max)
            DLQ_TOTAL.labels(entry.code).inc()
            log.warning("record dead-lettered", extra={"code": entry.code, "reason": entry.reason})

    def late_tenants(self, items: Sequence[Item]) -> set[str]:
        """Tenants of ``items`` holding a point older than the late window, on the clock read now
        (after the commit returned): query caches treat older data as immutable (ADR 0203)."""
        horizon = self._clock_ns() - self._late_window_ns
        return {item.tenant_id for item in items if item.tss and min(item.tss) < horizon}

    async def _bump_generations(self, items: Sequence[Item]) -> None:
        """After the commit: bump the data generation of every tenant of the batch and the late
        generation of those with late points, in one pipeline (never-revisiting bumps, see
        ``tsmesh_common.redis_keys``)."""
        if not items:
            return
        tenants = sorted({item.tenant_id for item in items})
        late = self.late_tenants(items)
        ns = self._namespace
        delay = 0.05
        while True:
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for tenant in tenants:
                        pipe.eval(ns.bump_generation_lua, 1, ns.data_generation_key(tenant))
                        if tenant in late:
                            pipe.eval(ns.bump_generation_lua, 1, ns.late_generation_key(tenant))
                    await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                GENERATION_RETRIES.inc()
                log.warning(
                    "data generation bump failed, retrying", extra={"error": type(exc).__name__, "delay": delay}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)


def split_item(item: Item) -> tuple[Item, Item]:
    """The first and second half of a record's points, each a record of its own (same tenant,
    headers and acceptance time), so that its serialization is what a dead letter carries."""
    mid = len(item.tss) // 2
    halves = []
    for lo, hi in ((0, mid), (mid, len(item.tss))):
        batch = common_pb2.PointBatch(
            tenant_id=item.tenant_id,
            points=item.batch.points[lo:hi],
            series_ids=item.batch.series_ids[lo:hi],
            accepted_at_ns=item.batch.accepted_at_ns,
        )
        halves.append(
            Item(
                item.tenant_id,
                batch,
                item.signed_ids[lo:hi],
                batch.SerializeToString(),
                item.headers,
                item.tss[lo:hi],
                item.values[lo:hi],
            )
        )
    return halves[0], halves[1]


async def _stop_all(clients: tuple[Any, ...]) -> None:
    """Stop every client, even when stopping an earlier one fails or is cancelled (the consumer's
    stop is cancelled at shutdown when the broker is gone; the DLQ producer must still be closed,
    or it leaks); a cancellation is raised again after the last stop."""
    cancelled: asyncio.CancelledError | None = None
    for client in clients:
        try:
            await client.stop()
        except asyncio.CancelledError as exc:
            cancelled = cancelled or exc
        except Exception as exc:  # noqa: BLE001 - shutting down: report and go on
            log.warning("kafka client stop failed", extra={"error": type(exc).__name__})
    if cancelled is not None:
        raise cancelled


async def _start_retrying(client: Any, what: str) -> None:
    delay = 0.5
    while True:
        try:
            await client.start()
            return
        except Exception as exc:  # noqa: BLE001 - the broker may come up later
            await client.stop()
            log.warning("%s cannot connect yet", what, extra={"error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
