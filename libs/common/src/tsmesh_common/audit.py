"""Report refusals to auth's append-only audit log (``AuthService.ReportAuditEvent``).

Every service's interceptor reports PERMISSION_DENIED answers here. The report carries the
caller's own credentials, so auth attributes the event to the caller's tenant and subject, and the
reporting service's credential, which auth requires and records (ADR 0108);
reports are fire-and-forget with a bound on those in flight, so a flood of refusals never
slows calls down nor grows memory (the excess is counted and dropped).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from prometheus_client import Counter
from tsmesh.v1 import auth_pb2, auth_pb2_grpc

from tsmesh_common.client import outgoing_metadata
from tsmesh_common.service_credential import ServiceCredential

log = logging.getLogger(__name__)

PERMISSION_DENIED_ACTION = "permission_denied"
REPORTS = Counter("tsmesh_audit_reports_total", "Audit events reported to auth", ["result"])


class AuditReporter:
    """Sends permission-denied events to auth in the background."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        max_in_flight: int = 64,
        timeout: float = 2.0,
        credential: ServiceCredential | None = None,
    ) -> None:
        self._stub = auth_pb2_grpc.AuthServiceStub(channel)
        self._own_metadata = credential.metadata() if credential is not None else ()
        self._max_in_flight = max_in_flight
        self._timeout = timeout
        self._in_flight: set[asyncio.Task[None]] = set()

    def permission_denied(self, authorization: str, method: str, reason: str, client_address: str = "") -> None:
        """Queue one report; dropped (and counted) when too many are already in flight."""
        self.report(authorization, PERMISSION_DENIED_ACTION, "denied", f"{method}: {reason}", client_address)

    def report(self, authorization: str, action: str, outcome: str, detail: str, client_address: str = "") -> None:
        """Queue one event of any action (auth accepts actions other than permission_denied from admins only)."""
        if len(self._in_flight) >= self._max_in_flight:
            REPORTS.labels("dropped").inc()
            return
        request = auth_pb2.ReportAuditEventRequest(
            action=action[:100], outcome=outcome[:100], detail=detail[:1000], client_address=client_address[:64]
        )
        task = asyncio.create_task(self._send(request, authorization))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _send(self, request: auth_pb2.ReportAuditEventRequest, authorization: str) -> None:
        try:
            await self._stub.ReportAuditEvent(
                request, timeout=self._timeout, metadata=outgoing_metadata(authorization) + self._own_metadata
            )
            REPORTS.labels("sent").inc()
        except grpc.aio.AioRpcError as exc:
            REPORTS.labels("failed").inc()
            log.warning("audit report failed", extra={"code": exc.code().name})

    async def drain(self) -> None:
        """Wait for the reports in flight (shutdown)."""
        if self._in_flight:
            await asyncio.wait(tuple(self._in_flight), timeout=self._timeout)
