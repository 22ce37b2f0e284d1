"""OTLP/gRPC metrics (``opentelemetry.proto.collector.metrics.v1.MetricsService/Export``) on ingest's
gRPC port, for internal services that export OTLP directly.

A request, read as :mod:`tsmesh_common.otlp_view`, is translated as the gateway's OTLP/HTTP route
does (:mod:`tsmesh_common.otlp_metrics`, ADR 0221) in a thread (the gRPC message cap bounds its
size), into ``WriteRequest`` bytes that go through :class:`~tsmesh_ingest.service.IngestServicer`
unchanged: same validation, limits, Kafka acknowledgement. Refused points are the response's
``partial_success``, as the OTLP spec says.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from tsmesh_common import otlp_view
from tsmesh_common.otlp_metrics import translate
from tsmesh_common.pointwire import IdentityCache, RequestWriter
from tsmesh_common.server import GrpcApp
from tsmesh_ingest.service import IngestServicer

SERVICE_NAME = "opentelemetry.proto.collector.metrics.v1.MetricsService"
MAX_POINTS = 100_000


class OtlpMetricsServicer:
    """``MetricsService.Export`` over :class:`IngestServicer`'s ``WriteBatch``."""

    def __init__(self, ingest: IngestServicer, chunk_points: int, max_points: int = MAX_POINTS) -> None:
        self._ingest = ingest
        self._chunk_points = chunk_points
        self._max_points = max_points
        self._identities = IdentityCache()

    async def Export(self, request: Any, context: Any) -> ExportMetricsServiceResponse:
        writer = RequestWriter(self._chunk_points, self._max_points)
        outcome = await asyncio.to_thread(translate, request, writer, self._identities)
        rejected = outcome.rejected
        messages = list(outcome.messages)
        for raw in writer.requests():
            answer = await self._ingest.WriteBatch(raw, context)
            rejected += answer.rejected
            messages += [f"{e.field}: {e.reason}" for e in answer.errors[: max(0, 10 - len(messages))]]
        response = ExportMetricsServiceResponse()
        if rejected or messages:
            response.partial_success.rejected_data_points = rejected
            response.partial_success.error_message = "; ".join(messages)
        return response


def add_to_server(servicer: OtlpMetricsServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as the OTLP metrics service (what the generated
    ``add_MetricsServiceServicer_to_server`` does, typed)."""
    handlers = {
        "Export": grpc.unary_unary_rpc_method_handler(
            servicer.Export,
            request_deserializer=otlp_view.parse,
            response_serializer=ExportMetricsServiceResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))


def register(app: GrpcApp, ingest: IngestServicer, chunk_points: int) -> None:
    """Serve OTLP metrics on ``app`` over ``ingest``, ``chunk_points`` points per WriteBatch."""
    servicer = OtlpMetricsServicer(ingest, chunk_points)
    app.add_service(SERVICE_NAME, lambda server: add_to_server(servicer, server))
