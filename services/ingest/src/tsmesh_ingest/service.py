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

import grpc
from tsmesh.v1 import ingest_pb2

from tsmesh_common.context import current_principal
from tsmesh_ingest.admission import Admission
from tsmesh_ingest.live import LivePublisher
from tsmesh_ingest.metrics import POINTS_ACCEPTED, POINTS_REJECTED
from tsmesh_ingest.producer import PointProducer
from tsmesh_ingest.validation import Validated, Validator

SERVICE_NAME = "tsmesh.v1.IngestService"


class IngestServicer:
    """Implements ``tsmesh.v1.IngestService`` on serialized ``WriteRequest`` messages (see
    :func:`add_to_server`); the tenant always comes from the caller's token."""

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

    async def WriteBatch(self, request: bytes, context: Any) -> ingest_pb2.WriteResponse:
        tenant_id = current_principal("write").tenant_id
        result = self._validator.validate_request(tenant_id, request)
        await self._accept(tenant_id, result, context)
        return _response(result, result.accepted, result.received)

    async def Write(self, request_iterator: AsyncIterator[bytes], context: Any) -> ingest_pb2.WriteResponse:
        tenant_id = current_principal("write").tenant_id
        inflight: list[asyncio.Task[None]] = []
        errors = Validated()
        total = accepted = 0
        try:
            async for request in request_iterator:
                result = self._validator.validate_request(tenant_id, request, base_index=total)
                errors.errors.extend(result.errors)
                total += result.received
                accepted += result.accepted
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
        if not result.series_ids:
            return
        serialized = self._producer.records(tenant_id, result.framed, result.series_ids)
        await self._producer.send(serialized, context.time_remaining())
        POINTS_ACCEPTED.inc(result.accepted)
        self._live.publish(tenant_id, [value for _, value in serialized])


def _response(result: Validated, accepted: int, total: int) -> ingest_pb2.WriteResponse:
    return ingest_pb2.WriteResponse(accepted=accepted, rejected=total - accepted, errors=result.errors)


def add_to_server(servicer: IngestServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as ``tsmesh.v1.IngestService``: what the generated
    ``add_IngestServiceServicer_to_server`` does, with requests left as received (validation reads
    their wire bytes; parsing them into messages first cost more than the rest of validation)."""
    handlers = {
        "Write": grpc.stream_unary_rpc_method_handler(
            servicer.Write,
            request_deserializer=None,
            response_serializer=ingest_pb2.WriteResponse.SerializeToString,
        ),
        "WriteBatch": grpc.unary_unary_rpc_method_handler(
            servicer.WriteBatch,
            request_deserializer=None,
            response_serializer=ingest_pb2.WriteResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]  # not in the stubs
