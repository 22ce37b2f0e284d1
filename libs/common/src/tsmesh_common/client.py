"""The gRPC client factory: pooled channels with keepalive, deadlines on every call, and retries
with jittered exponential backoff for idempotent calls on retryable codes only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import grpc
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential

from tsmesh_common.context import REQUEST_ID_HEADER, request_id_var
from tsmesh_common.grpc_tuning import GrpcTuning
from tsmesh_common.tracing import inject_headers, tracing_enabled

T = TypeVar("T")

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})
CHANNEL_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
)


def create_channel(target: str, tuning: GrpcTuning | None = None) -> grpc.aio.Channel:
    """A long-lived channel to ``target`` (``host:port`` or ``dns:///name:port``); share one per
    upstream per process. Calls are balanced over every resolved address and idempotent writes are
    retried on UNAVAILABLE, both as ``tuning`` says."""
    options = (*CHANNEL_OPTIONS, *(tuning or GrpcTuning()).channel_options())
    return grpc.aio.insecure_channel(target, options=options)


def outgoing_metadata(authorization: str | None = None) -> tuple[tuple[str, str], ...]:
    """Metadata for an outgoing call: the caller's credentials, request id and trace context."""
    md: list[tuple[str, str]] = []
    if authorization:
        md.append(("authorization", authorization))
    request_id = request_id_var.get()
    if request_id:
        md.append((REQUEST_ID_HEADER, request_id))
    if tracing_enabled():
        md.extend(inject_headers())
    return tuple(md)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in RETRYABLE_CODES


async def call_unary(
    method: Callable[..., Awaitable[T]],
    request: Any,
    *,
    timeout: float,
    metadata: Sequence[tuple[str, str]] = (),
    idempotent: bool = False,
    attempts: int = 3,
) -> T:
    """Call a unary method with a deadline; retry only idempotent calls on UNAVAILABLE/ABORTED."""
    if not idempotent:
        return await method(request, timeout=timeout, metadata=metadata)
    result: T | None = None
    async for attempt in AsyncRetrying(
        retry=retry_if_exception(_retryable),
        stop=stop_after_attempt(attempts),
        wait=wait_random_exponential(multiplier=0.05, max=1.0),
        reraise=True,
    ):
        with attempt:
            result = await method(request, timeout=timeout, metadata=metadata)
    return result  # type: ignore[return-value]
