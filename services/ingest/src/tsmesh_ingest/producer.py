"""The Kafka side of a write: one PointBatch record per (tenant, partition), answered after acks=all.

Failure is always fast and explicit: the broker unreachable, the producer's in-flight budget full,
or no acknowledgement within the call's deadline (and ``request_timeout_ms``) all raise
:class:`Unavailable`. A circuit breaker turns a dead broker into an immediate refusal.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import math
import sys
import time
from array import array
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.codec import lz4_encode
from aiokafka.errors import KafkaError
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.errors import Unavailable
from tsmesh_common.protowire import varint
from tsmesh_common.tracing import inject_headers
from tsmesh_ingest.config import KafkaConfig
from tsmesh_ingest.metrics import PRODUCE_FAILURES, PRODUCE_SECONDS

log = logging.getLogger(__name__)

if sys.byteorder != "little":  # fixed64 is little-endian on the wire; array("Q") is native.
    raise ImportError("tsmesh_ingest.producer assumes a little-endian host")

MAX_RECORD_BYTES = 768 * 1024
DEADLINE_MARGIN_S = 0.05


LZ4_LEVEL = 1


def _lz4_fast(payload: Any) -> bytes:
    return bytes(lz4_encode(payload, level=LZ4_LEVEL))


def use_fast_lz4() -> None:
    """Make aiokafka compress LZ4 record batches in LZ4's fast mode (level 1, librdkafka's default).

    aiokafka 0.14 always passes level 9 (LZ4HC): 0.9 ms of CPU per 70 KB record (1,000 points),
    13% of the API process's CPU in the ingest benchmark, for 12% smaller records; it has no
    setting for the level.
    Its record builder (the C one, or the Python one without extensions) calls the module-level
    ``lz4_encode`` of its own module, which this points at level 1. The output is the same kind of
    standard, block-independent LZ4 frame, so every consumer decodes it as before (ADR 0205)."""
    builder_module = importlib.import_module(DefaultRecordBatchBuilder.__module__)
    setattr(builder_module, "lz4_encode", _lz4_fast)  # noqa: B010 - a module the type checker cannot see into


class _Timeout(Exception):
    pass


def encode_point_batch(
    tenant_id: str, framed_points: Sequence[bytes], series_ids: Sequence[int], accepted_at_ns: int
) -> bytes:
    """The wire form of ``tsmesh.v1.PointBatch`` from points already serialized and framed (length
    varint + bytes, see :class:`~tsmesh_ingest.validation.Validated`): fields in number order, as
    upb writes them (a unit test checks it parses back to the same message)."""
    tenant = tenant_id.encode()
    parts = [b"\x0a", varint(len(tenant)), tenant]
    if framed_points:
        parts += [b"\x12", b"\x12".join(framed_points)]
    if series_ids:
        parts += [b"\x1a", varint(8 * len(series_ids)), array("Q", series_ids).tobytes()]
    if accepted_at_ns:
        parts += [b"\x20", varint(accepted_at_ns)]
    return b"".join(parts)


class PointProducer:
    """Turns accepted points into PointBatch records and waits for the broker's acknowledgement."""

    def __init__(self, config: KafkaConfig, producer: Any | None = None) -> None:
        self._config = config
        self._producer = producer or self._new_producer()
        self._started = False
        self._inflight_bytes = 0
        self._breaker = CircuitBreaker(
            "kafka-producer", failures=(KafkaError, _Timeout, OSError), failure_threshold=3, reset_seconds=1.0
        )

    def _new_producer(self) -> Any:
        config = self._config
        use_fast_lz4()
        return AIOKafkaProducer(
            bootstrap_servers=config.bootstrap,
            client_id="tsmesh-ingest",
            acks="all",
            compression_type="lz4",
            enable_idempotence=config.idempotence,
            request_timeout_ms=config.request_timeout_ms,
            linger_ms=config.linger_ms,
            max_batch_size=1024 * 1024,
            max_request_size=4 * 1024 * 1024,
            **config.security.client_kwargs(),
        )

    @property
    def partitions(self) -> int:
        return self._config.partitions

    async def start(self) -> None:
        """Connect once; on failure the half-started client is closed and replaced by a fresh one."""
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()
            self._producer = self._new_producer()
            raise
        self._started = True

    @property
    def connected(self) -> bool:
        return self._started

    async def start_with_retry(self) -> None:
        """Keep trying to connect (a broker that is down at boot must not stop the API from serving)."""
        delay = 0.5
        while not self._started:
            try:
                await self.start()
                log.info("kafka producer connected", extra={"bootstrap": self._config.bootstrap})
            except (KafkaError, OSError) as exc:
                log.warning("kafka producer cannot connect yet", extra={"error": type(exc).__name__})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        self._started = False
        await self._producer.stop()

    def records(
        self, tenant_id: str, framed_points: Sequence[bytes], series_ids: Sequence[int]
    ) -> list[tuple[int, bytes]]:
        """Serialized PointBatch records grouped by partition (series id modulo partitions), built by
        joining the points' own framed serializations (no message is rebuilt)."""
        n = self._config.partitions
        groups: dict[int, tuple[list[bytes], list[int]]] = {}
        for raw, sid in zip(framed_points, series_ids, strict=True):
            group = groups.get(sid % n)
            if group is None:
                group = groups[sid % n] = ([], [])
            group[0].append(raw)
            group[1].append(sid)
        accepted_at = time.time_ns()
        out: list[tuple[int, bytes]] = []
        for partition, (pts, ids) in groups.items():
            size = sum(map(len, pts))
            chunks = max(1, math.ceil(size / MAX_RECORD_BYTES))
            step = math.ceil(len(pts) / chunks)
            for i in range(0, len(pts), step):
                out.append(
                    (partition, encode_point_batch(tenant_id, pts[i : i + step], ids[i : i + step], accepted_at))
                )
        return out

    async def send(self, records: Sequence[tuple[int, bytes]], timeout: float | None) -> None:
        """Send serialized records and return once every one is acknowledged, or raise Unavailable."""
        if not self._started:
            PRODUCE_FAILURES.labels("not_connected").inc()
            raise Unavailable("kafka unavailable (producer not connected)")
        size = sum(len(value) for _, value in records)
        if self._inflight_bytes + size > self._config.max_inflight_bytes:
            PRODUCE_FAILURES.labels("buffer_full").inc()
            raise Unavailable("kafka producer buffer full, retry later")
        budget = self._config.request_timeout_ms / 1000
        if timeout is not None:
            budget = min(budget, timeout - DEADLINE_MARGIN_S)
        if budget <= 0:
            PRODUCE_FAILURES.labels("deadline").inc()
            raise Unavailable("not enough time left in the deadline to reach kafka")
        self._inflight_bytes += size
        start = time.perf_counter()
        try:
            await self._breaker.call(lambda: self._send_all(records, budget))
        except Unavailable:
            PRODUCE_FAILURES.labels("circuit_open").inc()
            raise
        except _Timeout:
            PRODUCE_FAILURES.labels("timeout").inc()
            raise Unavailable(f"kafka did not acknowledge within {budget:.2f}s") from None
        except (KafkaError, OSError) as exc:
            PRODUCE_FAILURES.labels("broker_error").inc()
            raise Unavailable(f"kafka unavailable ({type(exc).__name__})") from None
        finally:
            self._inflight_bytes -= size
        PRODUCE_SECONDS.observe(time.perf_counter() - start)

    async def _send_all(self, records: Sequence[tuple[int, bytes]], budget: float) -> None:
        headers = [(k, v.encode()) for k, v in inject_headers()]
        topic = self._config.topic

        async def produce() -> None:
            futures = [
                await self._producer.send(topic, value, key=b"%d" % partition, partition=partition, headers=headers)
                for partition, value in records
            ]
            await asyncio.gather(*futures)

        try:
            await asyncio.wait_for(produce(), budget)
        except TimeoutError:
            raise _Timeout from None
