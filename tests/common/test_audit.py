"""A PERMISSION_DENIED answer is reported to auth's audit log with the caller's own credentials."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from tsmesh.v1 import auth_pb2, auth_pb2_grpc, ingest_pb2, ingest_pb2_grpc

from tsmesh_common.audit import AuditReporter
from tsmesh_common.config import CommonConfig
from tsmesh_common.context import current_principal
from tsmesh_common.server import GrpcApp, create_server
from tsmesh_common.service_credential import ServiceCredential


class _Audit(auth_pb2_grpc.AuthServiceServicer):
    """Stands in for auth's ReportAuditEvent: records what arrives and with which credentials."""

    def __init__(self) -> None:
        self.received: list[tuple[auth_pb2.ReportAuditEventRequest, str]] = []
        self.services: list[str] = []

    async def ReportAuditEvent(self, request, context):  # type: ignore[no-untyped-def]
        md = dict(context.invocation_metadata())
        self.received.append((request, md.get("authorization", "")))
        self.services.append(md.get("x-tsmesh-service-credential", ""))
        return auth_pb2.ReportAuditEventResponse()


class _ReadOnlyIngest(ingest_pb2_grpc.IngestServiceServicer):
    async def WriteBatch(self, request, context):  # type: ignore[no-untyped-def]
        current_principal("write")
        return ingest_pb2.WriteResponse()


async def test_permission_denied_is_reported_with_the_callers_token_and_the_services_credential(token_mint) -> None:
    cfg = CommonConfig.from_env({}, service="t", grpc_port=0, metrics_port=0)
    audit_app = GrpcApp(authenticator=None)
    recorder = _Audit()
    audit_app.add_service(
        "tsmesh.v1.AuthService", lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(recorder, s)
    )
    audit_port = await create_server(audit_app, cfg)
    audit_channel = grpc.aio.insecure_channel(f"127.0.0.1:{audit_port}")
    credential = ServiceCredential("ingest", "i" * 40)
    app = GrpcApp(token_mint.authenticator(), audit=AuditReporter(audit_channel, credential=credential))
    app.add_service(
        "tsmesh.v1.IngestService", lambda s: ingest_pb2_grpc.add_IngestServiceServicer_to_server(_ReadOnlyIngest(), s)
    )
    port = await create_server(app, cfg)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    token = token_mint.token("acme", "read")
    try:
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await ingest_pb2_grpc.IngestServiceStub(channel).WriteBatch(
                ingest_pb2.WriteRequest(), timeout=5, metadata=(("authorization", f"Bearer {token}"),)
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        for _ in range(100):
            if recorder.received:
                break
            await asyncio.sleep(0.02)
        (request, authorization), *_ = recorder.received
        assert request.action == "permission_denied"
        assert request.detail.startswith("/tsmesh.v1.IngestService/WriteBatch")
        assert authorization == f"Bearer {token}"
        assert recorder.services == [f"ingest:{'i' * 40}"]  # auth refuses reports without it (ADR 0108)
    finally:
        await channel.close()
        await app.stop(0)
        await audit_channel.close()
        await audit_app.stop(0)
