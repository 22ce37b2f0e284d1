"""The gRPC IngestService: validate, admit, produce to Kafka, answer after the acknowledgement.

``Write`` pipelines a client stream: each message is validated, admitted and handed to the producer
as it arrives (at most ``max_inflight`` messages awaiting acks per stream), and the single answer
comes once every acknowledgement is in. A failure part-way (a limit, the broker) fails the stream;
messages acknowledged before it are durable, and a client retry is harmless (storage is idempotent).
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import AsyncIterator
from typing import Any

from tsmesh.v1 import ingest_pb2, ingest_pb2_grpc

from tsmesh_common.context import current_principal
from tsmesh_ingest.admission import Admission
from tsmesh_ingest.live import LivePublisher
from tsmesh_ingest.metrics import POINTS_ACCEPTED, POINTS_REJECTED
from tsmesh_ingest.producer import PointProducer
from tsmesh_ingest.validation import Validated, Validator


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """Implements ``tsmesh.v1.IngestService``; the tenant always comes from the caller's token."""

    def __init__(
        self,
        validator: Validator,
        admission: Admission,
        producer: PointProducer,
        live: LivePublisher,
        max_inflight: int = 8,
    ) -> None:
        self._validator = validator
        self._admission = admission
        self._producer = producer
        self._live = live
        self._max_inflight = max_inflight

    async def WriteBatch(self, request: ingest_pb2.WriteRequest, context: Any) -> ingest_pb2.WriteResponse:
        tenant_id = current_principal("write").tenant_id
        self._validator.check_request(request)
        request.DiscardUnknownFields()
        result = self._validator.validate(tenant_id, request.points)
        await self._accept(tenant_id, result, context)
        return _response(result, len(result.points), len(request.points))

    async def Write(
        self, request_iterator: AsyncIterator[ingest_pb2.WriteRequest], context: Any
    ) -> ingest_pb2.WriteResponse:
        tenant_id = current_principal("write").tenant_id
        inflight: list[asyncio.Task[None]] = []
        errors = Validated()
        total = accepted = 0
        try:
            async for request in request_iterator:
                self._validator.check_request(request)
                request.DiscardUnknownFields()
                result = self._validator.validate(tenant_id, request.points, base_index=total)
                errors.errors.extend(result.errors)
                total += len(request.points)
                accepted += len(result.points)
                if len(inflight) >= self._max_inflight:
                    await inflight.pop(0)
                await self._admit(tenant_id, result)
                inflight.append(asyncio.create_task(self._produce(tenant_id, result, context)))
            await asyncio.gather(*inflight)
        finally:
            for task in inflight:
                task.cancel()
        return _response(errors, accepted, total)

    async def _accept(self, tenant_id: str, result: Validated, context: Any) -> None:
        await self._admit(tenant_id, result)
        await self._produce(tenant_id, result, context)

    async def _admit(self, tenant_id: str, result: Validated) -> None:
        if result.reasons:
            for reason, count in Tally(result.reasons).items():
                POINTS_REJECTED.labels(reason).inc(count)
        await self._admission.admit(tenant_id, result.series_ids)

    async def _produce(self, tenant_id: str, result: Validated, context: Any) -> None:
        if not result.points:
            return
        serialized = self._producer.records(tenant_id, result.raws, result.series_ids)
        await self._producer.send(serialized, context.time_remaining())
        POINTS_ACCEPTED.inc(len(result.points))
        self._live.publish(tenant_id, [value for _, value in serialized])


def _response(result: Validated, accepted: int, total: int) -> ingest_pb2.WriteResponse:
    return ingest_pb2.WriteResponse(accepted=accepted, rejected=total - accepted, errors=result.errors)
