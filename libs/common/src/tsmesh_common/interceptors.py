"""The server interceptor stack, fused into one wrapper per call to keep per-call CPU low.

In order, around every handler: request id (from ``x-request-id`` or new), trace context,
authentication (all methods but the public ones), deadline enforcement (a server-side cap when the
client set none), RED metrics per method, logging, and the mapping of :mod:`tsmesh_common.errors`
to gRPC status codes. Unknown exceptions become INTERNAL with a generic message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from prometheus_client import Counter, Histogram

from tsmesh_common.audit import AuditReporter
from tsmesh_common.authn import Authenticator, bearer_token
from tsmesh_common.context import REQUEST_ID_HEADER, principal_var, request_id_var
from tsmesh_common.errors import DeadlineExceeded, TsmeshError
from tsmesh_common.tracing import extract_context, tracing_enabled

log = logging.getLogger(__name__)

Context = Any  # grpc.aio.ServicerContext; the stubs type it too loosely to help here
Handler = Any  # grpc.RpcMethodHandler

REQUESTS = Counter("tsmesh_grpc_server_requests_total", "gRPC calls handled", ["method", "code"])
LATENCY = Histogram(
    "tsmesh_grpc_server_duration_seconds",
    "gRPC call duration",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)

ALWAYS_PUBLIC_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class _Call:
    """Book-keeping of one call: identity, timing, outcome."""

    __slots__ = ("code", "method", "request_id", "start")

    def __init__(self, method: str, request_id: str) -> None:
        self.method = method
        self.request_id = request_id
        self.start = time.perf_counter()
        self.code = grpc.StatusCode.OK


class ServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Request id, tracing, authentication, deadlines, metrics, logging and error mapping."""

    def __init__(
        self,
        authenticator: Authenticator | None,
        public_methods: frozenset[str] = frozenset(),
        max_deadline_seconds: float = 30.0,
        audit: AuditReporter | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._audit = audit
        self._public = public_methods
        self._max_deadline = max_deadline_seconds
        self._tracer = trace.get_tracer("tsmesh")
        self._metric_children: dict[tuple[str, grpc.StatusCode], Any] = {}
        self._latency_children: dict[str, Any] = {}
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(details)
        method: str = details.method
        if handler is None or method.startswith(ALWAYS_PUBLIC_PREFIXES):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]  # the wrapped handler of a method is built once, not per call
        wrapped = self._wrap_handler(method, handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap_handler(self, method: str, handler: Handler) -> Handler:
        needs_auth = self._authenticator is not None and method not in self._public
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._wrap_unary(method, handler.unary_unary, needs_auth),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(
                self._wrap_unary(method, handler.stream_unary, needs_auth),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._wrap_stream(method, handler.unary_stream, needs_auth),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            self._wrap_stream(method, handler.stream_stream, needs_auth),
            handler.request_deserializer,
            handler.response_serializer,
        )

    def _start(self, method: str, metadata: Any) -> _Call:
        request_id = None
        for key, value in metadata:
            if key == REQUEST_ID_HEADER:
                request_id = value if isinstance(value, str) and 0 < len(value) <= 128 else None
                break
        call = _Call(method, request_id or os.urandom(16).hex())
        request_id_var.set(call.request_id)
        return call

    async def _authenticate(self, metadata: Any) -> None:
        assert self._authenticator is not None
        principal_var.set(await self._authenticator.authenticate(bearer_token(metadata)))

    def _wrap_unary(self, method: str, behavior: Any, needs_auth: bool) -> Callable[[Any, Context], Awaitable[Any]]:
        async def wrapper(request: Any, context: Context) -> Any:
            metadata = context.invocation_metadata() or ()  # built anew by gRPC on each access: once
            call = self._start(method, metadata)
            try:
                if needs_auth:
                    await self._authenticate(metadata)
                remaining = context.time_remaining()
                budget = self._max_deadline if remaining is None else min(remaining, self._max_deadline)
                if budget <= 0:
                    raise DeadlineExceeded("deadline exceeded before the call started")
                traced = tracing_enabled()
                if remaining is not None and remaining <= self._max_deadline and not traced:
                    return await behavior(request, context)  # gRPC itself enforces the caller's deadline
                try:
                    async with asyncio.timeout(budget):
                        if traced:
                            with self._tracer.start_as_current_span(
                                method, context=extract_context(metadata), kind=trace.SpanKind.SERVER
                            ):
                                return await behavior(request, context)
                        return await behavior(request, context)
                except TimeoutError:
                    raise DeadlineExceeded("deadline exceeded") from None
            except BaseException as exc:
                await self._fail(call, method, context, exc)
                raise
            finally:
                self._finish(call, method, context)

        return wrapper

    def _wrap_stream(
        self, method: str, behavior: Any, needs_auth: bool
    ) -> Callable[[Any, Context], AsyncIterator[Any]]:
        async def wrapper(request: Any, context: Context) -> AsyncIterator[Any]:
            metadata = context.invocation_metadata() or ()
            call = self._start(method, metadata)
            try:
                if needs_auth:
                    await self._authenticate(metadata)
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                await self._fail(call, method, context, exc)
                raise
            finally:
                self._finish(call, method, context)

        return wrapper

    async def _fail(self, call: _Call, method: str, context: Context, exc: BaseException) -> None:
        if isinstance(exc, TsmeshError):
            code, message = exc.code, exc.message
            trailing = exc.trailing_metadata()
        elif isinstance(exc, asyncio.CancelledError):
            call.code = grpc.StatusCode.CANCELLED
            return
        elif isinstance(exc, grpc.aio.AbortError | grpc.RpcError):
            call.code = context.code() or grpc.StatusCode.UNKNOWN
            return
        else:
            log.exception("unhandled error in %s", method)
            code, message, trailing = grpc.StatusCode.INTERNAL, "internal error", ()
        call.code = code
        context.set_trailing_metadata((*trailing, (REQUEST_ID_HEADER, call.request_id)))
        if code not in (grpc.StatusCode.INTERNAL,):
            log.info("call refused", extra={"method": method, "code": code.name, "reason": message})
        if code == grpc.StatusCode.PERMISSION_DENIED and self._audit is not None:
            self._report_denied(method, message, context)
        await context.abort(code, message)

    def _report_denied(self, method: str, reason: str, context: Context) -> None:
        assert self._audit is not None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and isinstance(value, str):
                self._audit.permission_denied(value, method, reason, context.peer() or "")
                return

    def _finish(self, call: _Call, method: str, context: Context) -> None:
        key = (method, call.code)
        counter = self._metric_children.get(key)
        if counter is None:
            counter = self._metric_children[key] = REQUESTS.labels(method, call.code.name)
        counter.inc()
        histogram = self._latency_children.get(method)
        if histogram is None:
            histogram = self._latency_children[method] = LATENCY.labels(method)
        histogram.observe(time.perf_counter() - call.start)
