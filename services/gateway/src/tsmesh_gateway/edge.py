"""The outermost ASGI layer: request id, security headers, RED metrics and last-resort error bodies.

One fused middleware (not a stack of BaseHTTPMiddleware) keeps the per-request cost low.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tsmesh_common.context import request_id_var
from tsmesh_gateway.http_errors import to_http_error
from tsmesh_gateway.tally import TallyCounter, TallyHistogram

log = logging.getLogger(__name__)

REQUESTS = Counter("tsmesh_gateway_http_requests_total", "HTTP requests answered", ["route_class", "status"])
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
LATENCY = Histogram("tsmesh_gateway_http_duration_seconds", "HTTP request duration", ["route_class"], buckets=_BUCKETS)

_VALID_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
CSP = (
    b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    b"object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
CSP_HEADER = b"content-security-policy"
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (CSP_HEADER, CSP),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]
HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")


def route_class(path: str) -> str:
    """The rate-limit and metrics class of a path: write, query, auth or other."""
    if path.startswith(("/v1/query", "/v1/series", "/v1/labels")):
        return "query"
    if path.startswith(("/v1/write", "/api/v2/write")):
        return "write"
    if path.startswith(("/v1/auth", "/v1/tokens", "/.well-known")):
        return "auth"
    if path.startswith("/v1/stream"):
        return "stream"
    return "other"


def request_id_from(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            text: str = value.decode("latin-1")
            if _VALID_ID.fullmatch(text):
                return text
            break
    return new_request_id()


_ID_STATE: list[Any] = []


def _reseed() -> None:
    # the counter starts at 2**48 plus a random 24-bit offset, so hex() of it is "0x1" and 12 digits
    # (for the next 2**48 - 2**24 ids of the process, centuries at any request rate)
    _ID_STATE[:] = [os.urandom(10).hex(), itertools.count((1 << 48) + int.from_bytes(os.urandom(3), "big"))]


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_request_id() -> str:
    """A fresh 32-hex-digit id: a random per-process prefix (new in every forked worker) and a
    counter, instead of a uuid4 per request."""
    prefix: str = _ID_STATE[0]
    return prefix + hex(next(_ID_STATE[1]))[3:]


class EdgeMiddleware:
    """Stamps ``X-Request-ID`` and security headers on every response and counts it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope)
        request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        extra = [(b"x-request-id", request_id.encode()), *SECURITY_HEADERS]
        if scope.get("scheme") == "https":
            extra.append(HSTS)
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = message.get("headers", ())
                if any(key == CSP_HEADER for key, _ in headers):  # a page with its own policy (the console)
                    message["headers"] = [*headers, *(h for h in extra if h[0] != CSP_HEADER)]
                else:
                    message["headers"] = [*headers, *extra]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as exc:  # the last line of defence answers JSON, never a trace
            if response_started:
                raise
            error = to_http_error(exc)
            status = error.status
            headers = [(b"content-type", b"application/json"), *extra]
            headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": error.body()})
        finally:
            self._observe(route_class(scope["path"]), status, time.perf_counter() - started)

    def _observe(self, klass: str, status: int, seconds: float) -> None:
        observe(klass, status, seconds)


_COUNTERS: dict[tuple[str, int], TallyCounter] = {}
_HISTOGRAMS: dict[str, TallyHistogram] = {}


def requests_tally(klass: str, status: int) -> TallyCounter:
    """The tally of ``tsmesh_gateway_http_requests_total`` for ``klass`` and ``status``."""
    counter = _COUNTERS.get((klass, status))
    if counter is None:
        counter = _COUNTERS[(klass, status)] = TallyCounter(REQUESTS.labels(klass, str(status)))
    return counter


def latency_tally(klass: str) -> TallyHistogram:
    """The tally of ``tsmesh_gateway_http_duration_seconds`` for ``klass``."""
    histogram = _HISTOGRAMS.get(klass)
    if histogram is None:
        histogram = _HISTOGRAMS[klass] = TallyHistogram(LATENCY.labels(klass), _BUCKETS)
    return histogram


def observe(klass: str, status: int, seconds: float) -> None:
    """Count one answered request of ``klass`` (tallies, see :mod:`tsmesh_gateway.tally`)."""
    requests_tally(klass, status).n += 1
    latency_tally(klass).observe(seconds)
