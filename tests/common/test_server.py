"""The gRPC server skeleton: health, graceful shutdown, error mapping, authentication refusal."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tsmesh.v1 import ingest_pb2, ingest_pb2_grpc

from tsmesh_common.config import CommonConfig
from tsmesh_common.context import current_principal
from tsmesh_common.errors import InvalidArgument, ResourceExhausted
from tsmesh_common.server import GrpcApp, create_server


class _Ingest(ingest_pb2_grpc.IngestServiceServicer):
    async def WriteBatch(self, request: ingest_pb2.WriteRequest, context: object) -> ingest_pb2.WriteResponse:
        if not request.points:
            raise InvalidArgument("points", "must not be empty")
        if request.points[0].metric == "boom":
            raise RuntimeError("secret internal detail")
        if request.points[0].metric == "limit":
            raise ResourceExhausted("points_per_second", "over limit", retry_after_seconds=1.5)
        return ingest_pb2.WriteResponse(accepted=len(request.points))


def _cfg() -> CommonConfig:
    return CommonConfig.from_env({"TSMESH_GRPC_PORT": "0"}, service="test", grpc_port=0, metrics_port=0)


@pytest.fixture
async def stub():
    app = GrpcApp(authenticator=None)
    app.add_service(
        "tsmesh.v1.IngestService", lambda s: ingest_pb2_grpc.add_IngestServiceServicer_to_server(_Ingest(), s)
    )
    port = await create_server(app, _cfg())
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield app, channel, port
    await channel.close()
    await app.stop(0.1)


async def test_health_reports_each_service_and_turns_not_serving_on_stop(stub) -> None:
    app, channel, _ = stub
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "tsmesh.v1.IngestService"):
        answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    await app.stop(0.1)
    assert not app.serving


async def test_errors_map_to_status_codes_with_field_and_limit(stub) -> None:
    _, channel, _ = stub
    ingest = ingest_pb2_grpc.IngestServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await ingest.WriteBatch(ingest_pb2.WriteRequest(), timeout=2)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad.value.details() == "points: must not be empty"
    assert ("tsmesh-field", "points") in tuple(bad.value.trailing_metadata())

    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await ingest.WriteBatch(ingest_pb2.WriteRequest(points=[{"metric": "limit"}]), timeout=2)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("retry-after", "1.500") in tuple(limited.value.trailing_metadata())

    with pytest.raises(grpc.aio.AioRpcError) as crashed:
        await ingest.WriteBatch(ingest_pb2.WriteRequest(points=[{"metric": "boom"}]), timeout=2)
    assert crashed.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (crashed.value.details() or "")


async def test_request_id_is_echoed_on_errors(stub) -> None:
    _, channel, _ = stub
    ingest = ingest_pb2_grpc.IngestServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await ingest.WriteBatch(ingest_pb2.WriteRequest(), timeout=2, metadata=(("x-request-id", "req-123"),))
    assert ("x-request-id", "req-123") in tuple(bad.value.trailing_metadata())


async def test_port_in_use_is_reported_with_the_variable(stub) -> None:
    _, _, port = stub
    other = GrpcApp(authenticator=None)
    with pytest.raises(Exception, match="TSMESH_GRPC_PORT"):
        await other.start("127.0.0.1", port)
    await other.stop(0)


def test_current_principal_requires_authentication() -> None:
    with pytest.raises(Exception, match="authentication required"):
        current_principal("read")


async def test_a_dying_background_task_stops_the_server_instead_of_hiding() -> None:
    app = GrpcApp(authenticator=None)
    await create_server(app, _cfg())

    async def consumer() -> None:
        await asyncio.sleep(0.01)
        raise RuntimeError("lost the partition")

    async def listener() -> None:
        await asyncio.sleep(3600)

    app.run_in_background(listener(), "listener")
    app.run_in_background(consumer(), "writer")
    await asyncio.wait_for(app.stopping.wait(), 5)
    assert app.failure is not None and "writer" in app.failure and "lost the partition" in app.failure
    await app.stop(0.1)
    assert not app.serving
