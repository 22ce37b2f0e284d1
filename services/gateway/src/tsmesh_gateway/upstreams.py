"""The gateway's upstreams: one pooled channel, a deadline and a circuit breaker per service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tsmesh.v1 import auth_pb2_grpc, export_pb2_grpc, ingest_pb2_grpc, lifecycle_pb2_grpc, query_pb2_grpc

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.client import call_unary, create_channel, outgoing_metadata
from tsmesh_common.service_credential import ServiceCredential

T = TypeVar("T")

BREAKER_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class _UpstreamDown(Exception):
    """Wraps the failures that count against a breaker (unavailable, deadline)."""

    def __init__(self, error: grpc.aio.AioRpcError) -> None:
        super().__init__(error.code().name)
        self.error = error


class Upstream:
    """One gRPC service behind the gateway: channel, deadline and breaker."""

    def __init__(
        self,
        name: str,
        channel: grpc.aio.Channel,
        *,
        deadline: float,
        breaker: CircuitBreaker,
        credential: ServiceCredential | None = None,
    ) -> None:
        self.name = name
        # the gateway's own credential on every call (auth believes x-client-address only with it)
        self._own_metadata = credential.metadata() if credential is not None else ()
        self.channel = channel
        self.deadline = deadline
        self.breaker = breaker
        self._health = health_pb2_grpc.HealthStub(channel)

    async def unary(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        *,
        authorization: str | None,
        idempotent: bool = False,
        extra_metadata: tuple[tuple[str, str], ...] = (),
    ) -> T:
        """Call ``method`` with the caller's credentials, the request id, ``extra_metadata`` and the deadline."""
        metadata = outgoing_metadata(authorization) + self._own_metadata + extra_metadata

        async def attempt() -> T:
            try:
                return await call_unary(
                    method, request, timeout=self.deadline, metadata=metadata, idempotent=idempotent
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() in BREAKER_CODES:
                    raise _UpstreamDown(exc) from None
                raise

        try:
            return await self.breaker.call(attempt)
        except _UpstreamDown as down:
            raise down.error from None

    async def serving(self, timeout: float = 1.0) -> bool:
        """Whether the upstream's grpc.health.v1 reports SERVING."""
        try:
            answer = await self._health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


@dataclass
class Upstreams:
    """The services the gateway translates to, with their stubs. ``lifecycle`` is the ingest writer
    (it holds the database): admin routes only, not part of readiness; it defaults to ``ingest``."""

    auth: Upstream
    ingest: Upstream
    query: Upstream
    lifecycle: Upstream | None = None

    def __post_init__(self) -> None:
        self.auth_stub = auth_pb2_grpc.AuthServiceStub(self.auth.channel)
        self.ingest_stub = ingest_pb2_grpc.IngestServiceStub(self.ingest.channel)
        self.query_stub = query_pb2_grpc.QueryServiceStub(self.query.channel)
        self.export_stub = export_pb2_grpc.DataExportServiceStub(self.query.channel)
        writer = self.lifecycle or self.ingest
        self.lifecycle_upstream = writer
        self.lifecycle_stub = lifecycle_pb2_grpc.DataLifecycleServiceStub(writer.channel)

    @classmethod
    def connect(
        cls,
        *,
        auth_addr: str,
        ingest_addr: str,
        query_addr: str,
        deadline: float,
        failures: int,
        reset: float,
        ingest_writer_addr: str = "",
        auth_credential: ServiceCredential | None = None,
    ) -> Upstreams:
        def make(name: str, addr: str, credential: ServiceCredential | None = None) -> Upstream:
            breaker = CircuitBreaker(
                f"gateway_{name}", failures=(_UpstreamDown,), failure_threshold=failures, reset_seconds=reset
            )
            return Upstream(name, create_channel(addr), deadline=deadline, breaker=breaker, credential=credential)

        writer = make("ingest_writer", ingest_writer_addr) if ingest_writer_addr else None
        return cls(
            make("auth", auth_addr, auth_credential), make("ingest", ingest_addr), make("query", query_addr), writer
        )

    def all(self) -> tuple[Upstream, ...]:
        return (self.auth, self.ingest, self.query)

    async def readiness(self) -> dict[str, bool]:
        """Each upstream's health, checked concurrently."""
        results = await asyncio.gather(*(u.serving() for u in self.all()))
        return {u.name: ok for u, ok in zip(self.all(), results, strict=True)}

    async def close(self) -> None:
        for upstream in (*self.all(), *([self.lifecycle] if self.lifecycle is not None else [])):
            await upstream.channel.close(None)
