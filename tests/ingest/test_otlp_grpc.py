"""OTLP/gRPC MetricsService.Export on ingest's port: translated points stored through WriteBatch's
validation, refused metrics and points reported as the response's partial success."""

from __future__ import annotations

import time
from typing import Any

import grpc
import ingest_harness
import pytest
from ingest_harness import eventually
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m

pytestmark = pytest.mark.integration

ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest
EXPORT = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


def gauge(name: str, *points: tuple[int, float]) -> m.Metric:
    return m.Metric(
        name=name, gauge=m.Gauge(data_points=[m.NumberDataPoint(time_unix_nano=t, as_double=v) for t, v in points])
    )


def export_request(*metrics: m.Metric) -> ExportMetricsServiceRequest:
    return ExportMetricsServiceRequest(
        resource_metrics=[
            m.ResourceMetrics(
                resource={"attributes": [{"key": "service.name", "value": {"string_value": "svc"}}]},
                scope_metrics=[m.ScopeMetrics(metrics=list(metrics))],
            )
        ]
    )


async def test_export_stores_points_and_reports_refusals(ts_db: Any, start_ingest: Any, tenant_id: str) -> None:
    ingest = await start_ingest(ts_db)
    export = ingest.channel.unary_unary(
        EXPORT,
        request_serializer=ExportMetricsServiceRequest.SerializeToString,
        response_deserializer=ExportMetricsServiceResponse.FromString,
    )
    now = time.time_ns()
    delta = m.Metric(
        name="d",
        sum=m.Sum(
            aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
            data_points=[m.NumberDataPoint(time_unix_nano=now, as_int=1)],
        ),
    )
    request = export_request(gauge("room.temp", (now, 21.5), (now - 40 * 86_400 * 10**9, 1.0)), delta)
    answer = await export(request, metadata=ingest.auth(tenant_id), timeout=10)
    assert answer.partial_success.rejected_data_points == 2
    assert "delta temporality" in answer.partial_success.error_message
    assert "too old" in answer.partial_success.error_message

    async def stored() -> list[Any]:
        return await ingest.fetch(
            "SELECT s.metric, s.labels, p.value FROM ts.points p JOIN ts.series s USING (series_id)"
            " WHERE s.tenant_id = $1",
            tenant_id,
        )

    rows = await eventually(stored)
    assert [(r["metric"], r["labels"], r["value"]) for r in rows] == [("room_temp", '{"job": "svc"}', 21.5)]


async def test_export_needs_a_write_token_and_refuses_an_unknown_metric_type(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db)
    export = ingest.channel.unary_unary(
        EXPORT,
        request_serializer=ExportMetricsServiceRequest.SerializeToString,
        response_deserializer=ExportMetricsServiceResponse.FromString,
    )
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await export(export_request(gauge("g", (time.time_ns(), 1.0))), metadata=ingest.auth(tenant_id, "read"))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await export(export_request(m.Metric(name="mystery")), metadata=ingest.auth(tenant_id))
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown metric type" in (unknown.value.details() or "")
