"""The pure-ASGI fast path of the cached query routes (``POST /v1/query/*``, ``/v1/series``,
``/v1/labels/values``).

The hot dashboard path skips Starlette's routing, middleware stack and per-request Request/Response
objects: one scan of the raw headers, the same authorization, rate limits, body limits and
micro-cache as the Starlette routes (:class:`tsmesh_gateway.querycache.QueryCache`), and the
edge duties of :mod:`tsmesh_gateway.edge` (request id, security headers, metrics, JSON errors)
with the constant headers precomputed, and gzip for answers of 1 KB or more when the client accepts
it (as :mod:`tsmesh_gateway.compression`). ``GET /v1/query/range`` reads no body at all. Requests it
does not fully own (compressed bodies, CORS requests, other methods) go to the Starlette
application unchanged.
"""

from __future__ import annotations

import time

from starlette.types import Receive, Scope, Send

from tsmesh_common.context import request_id_var
from tsmesh_gateway.bodies import too_large
from tsmesh_gateway.compression import accepts_gzip
from tsmesh_gateway.deps import Deps
from tsmesh_gateway.edge import (
    HSTS,
    SECURITY_HEADERS,
    latency_tally,
    new_request_id,
    observe,
    request_id_from,
    requests_tally,
)
from tsmesh_gateway.http_errors import HttpError, to_http_error
from tsmesh_gateway.querycache import CachedAnswer
from tsmesh_gateway.rate_leasing import rate_header_bytes

_JSON = (b"content-type", b"application/json")
_BASE = [_JSON, *SECURITY_HEADERS]
_BASE_TLS = [*_BASE, HSTS]
_GZIP = [(b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding")]
_CACHE_VALUES = {o: (b"x-cache", o.encode()) for o in ("hit", "miss", "shared", "bypass")}
_OK, _LATENCY = requests_tally("query", 200), latency_tally("query")
# the request headers the fast path looks at; any other costs one set lookup
_READ = frozenset(
    (b"authorization", b"content-length", b"x-request-id", b"accept-encoding", b"content-encoding", b"origin")
)


class FastQueries:
    """Serves the cached query routes straight from ASGI; :meth:`serve` says whether it did."""

    def __init__(self, deps: Deps, handlers: dict[tuple[str, str], CachedAnswer], *, cors: bool) -> None:
        self._deps = deps
        self._handlers = handlers
        self._cors = cors

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request and return True, or return False having touched nothing."""
        answer = self._handlers.get((scope["method"], scope["path"]))
        if answer is None:
            return False
        authorization: str | None = None
        declared: bytes | None = None
        request_id: str | None = None
        gzip_ok = False
        for key, value in scope["headers"]:
            if key not in _READ:
                continue
            if key == b"authorization":
                authorization = value.decode("latin-1")
            elif key == b"content-length":
                declared = value
            elif key == b"x-request-id":
                request_id = request_id_from(scope)
            elif key == b"accept-encoding":
                gzip_ok = accepts_gzip(value)
            elif (key == b"content-encoding" and value.strip().lower() not in (b"", b"identity")) or (
                key == b"origin" and self._cors
            ):
                return False
        started = time.perf_counter()
        if request_id is None:
            request_id = new_request_id()
        request_id_var.set(request_id)
        base = _BASE_TLS if scope.get("scheme") == "https" else _BASE
        try:
            deps = self._deps
            caller = await deps.authorize_header(authorization, deps.client_address(scope), "query", "read")
            raw = scope["query_string"] if scope["method"] == "GET" else await self._body(receive, declared)
            body, gzipped, outcome = await answer(caller, raw, gzip_ok)
            headers = [
                *base,
                (b"content-length", b"%d" % len(body)),
                (b"x-request-id", request_id.encode()),
                _CACHE_VALUES[outcome],
            ]
            if caller.rate is not None:
                headers += rate_header_bytes(caller.rate)
            if gzipped:
                headers += _GZIP
            status = 200
        except Exception as exc:  # noqa: BLE001 - mapped to the JSON error body, 500 only for the unknown
            error = to_http_error(exc)
            status, body = error.status, error.body()
            headers = [
                *base,
                (b"content-length", b"%d" % len(body)),
                (b"x-request-id", request_id.encode()),
                *((k.lower().encode(), v.encode()) for k, v in error.headers.items()),
            ]
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        finally:
            if status == 200:
                _OK.n += 1
                _LATENCY.observe(time.perf_counter() - started)
            else:
                observe("query", status, time.perf_counter() - started)
        return True

    async def _body(self, receive: Receive, declared: bytes | None) -> bytes:
        deps = self._deps
        max_bytes = deps.cfg.max_body_bytes
        if declared is not None:
            if not declared.isdigit():
                raise HttpError(400, "INVALID_ARGUMENT", "bad Content-Length", {"field": "content-length"})
            if int(declared) > max_bytes:
                raise too_large(max_bytes)
        chunks = await deps.watchdog.read(receive, deps.cfg.body_timeout_seconds, max_bytes)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
