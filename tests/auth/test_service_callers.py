"""Only an authenticated gateway names the client address; only an authenticated service reports
audit events; the audit log records which service did (ADR 0108)."""

from __future__ import annotations

import asyncpg
import grpc
import pytest
from tsmesh.v1 import auth_pb2

from tsmesh_common.service_credential import ServiceCredential

from .conftest import GATEWAY, QUERY, AuthServer, Database

SPOOFED = "203.0.113.66"


async def _last_audit(server: AuthServer, action: str) -> dict[str, str]:
    async with server.parts.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT client_address, reporter, actor FROM auth.audit_log WHERE action = $1 ORDER BY id DESC LIMIT 1",
            action,
        )
    return dict(row)


async def _login(server: AuthServer, tenant: str, email: str, metadata: tuple[tuple[str, str], ...]) -> grpc.StatusCode:
    try:
        await server.stub.Login(
            auth_pb2.LoginRequest(tenant=tenant, email=email, password="wrong"), metadata=metadata, timeout=10
        )
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_an_unauthenticated_callers_address_is_neither_audited_nor_throttled_on(
    auth_server: AuthServer,
) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    impostor = ServiceCredential("gateway", "not-the-gateways-secret-but-long-enough")
    codes = []
    for i in range(8):  # a new spoofed address each time: were it believed, each would get its own budget
        spoofed = (("x-client-address", f"198.51.100.{i}"),)
        codes.append(await _login(auth_server, name, email, (impostor.metadata() if i % 2 else ()) + spoofed))
    assert codes[-1] == grpc.StatusCode.RESOURCE_EXHAUSTED, codes
    audited = await _last_audit(auth_server, "login")
    assert audited["client_address"] == "127.0.0.1" and audited["reporter"] == ""


async def test_the_gateways_client_address_is_audited_and_throttled_on(auth_server: AuthServer) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    codes = [
        await _login(auth_server, name, email, (*GATEWAY.metadata(), ("x-client-address", f"198.51.100.{i}")))
        for i in range(8)
    ]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 8  # one budget per client address
    audited = await _last_audit(auth_server, "login")
    assert audited == {"client_address": "198.51.100.7", "reporter": "gateway", "actor": email}


async def test_report_audit_event_needs_a_service_credential(auth_server: AuthServer) -> None:
    _, _, admin = await auth_server.admin_token()
    request = auth_pb2.ReportAuditEventRequest(action="permission_denied", outcome="denied", client_address=SPOOFED)
    user_only = (("authorization", f"Bearer {admin}"),)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await auth_server.stub.ReportAuditEvent(request, metadata=user_only)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "service credential" in (refused.value.details() or "")
    async with auth_server.parts.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM auth.audit_log WHERE client_address = $1", SPOOFED) == 0
    await auth_server.stub.ReportAuditEvent(request, metadata=(*QUERY.metadata(), *user_only))
    assert (await _last_audit(auth_server, "permission_denied"))["reporter"] == "query"


async def test_rows_with_a_reporter_keep_the_chain_verifiable(auth_server: AuthServer, migrated: Database) -> None:
    await auth_server.admin_token()  # audited logins reported by the gateway
    result = await auth_server.parts.audit.verify()
    assert result.ok and result.rows > 0
    # editing who reported an event breaks the chain like editing any other field (as the superuser)
    conn = await asyncpg.connect(migrated.dsn())
    try:
        await conn.execute("ALTER TABLE auth.audit_log DISABLE TRIGGER audit_log_append_only")
        await conn.execute("UPDATE auth.audit_log SET reporter = 'query' WHERE reporter = 'gateway'")
        await conn.execute("ALTER TABLE auth.audit_log ENABLE TRIGGER audit_log_append_only")
    finally:
        await conn.close()
    tampered = await auth_server.parts.audit.verify()
    assert not tampered.ok and tampered.first_bad_id is not None
    assert [p for p in tampered.problems if "do not verify" in p] == list(tampered.problems), tampered.problems
