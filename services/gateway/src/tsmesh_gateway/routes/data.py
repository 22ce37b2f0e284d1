"""The data API: ``/v1/write`` and the query routes, answered through :class:`~tsmesh_gateway.querycache.QueryCache`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsmesh_gateway import convert
from tsmesh_gateway.bodies import JSON_TYPE, JSONResponse
from tsmesh_gateway.compression import accepts_gzip
from tsmesh_gateway.deps import Caller, Deps, endpoint
from tsmesh_gateway.querycache import CachedAnswer, QueryCache


def query_routes(deps: Deps, queries: QueryCache | None = None) -> list[Route]:
    """Write and query routes bound to ``deps`` (``queries``: the cache shared with the fast path)."""
    handlers = (queries or QueryCache(deps)).handlers()
    ingest = deps.upstreams.ingest
    ingest_stub = deps.upstreams.ingest_stub

    def cached_route(answers: dict[str, CachedAnswer]) -> Callable[[Request], Awaitable[Response]]:
        @endpoint
        async def route(request: Request) -> Response:
            caller = await deps.authorize(request, "query", "read")
            method = "GET" if request.method == "HEAD" else request.method
            raw = request.scope["query_string"] if method == "GET" else await deps.body(request)
            gzip_ok = accepts_gzip(request.headers.get("accept-encoding", "").encode("latin-1"))
            body, gzipped, outcome = await answers[method](caller, raw, gzip_ok)
            return _json_bytes(body, gzipped, caller, outcome)

        return route

    by_path: dict[str, dict[str, CachedAnswer]] = {}
    for (method, path), answer in handlers.items():
        by_path.setdefault(path, {})[method] = answer

    @endpoint
    async def write(request: Request) -> Response:
        caller = await deps.authorize(request, "write", "write")
        message = convert.write_from_json(await deps.json(request), deps.cfg.max_write_points)
        answer = await ingest.unary(ingest_stub.WriteBatch, message, authorization=caller.authorization)
        return JSONResponse(convert.write_to_json(answer), headers=caller.headers)

    return [
        Route("/v1/write", write, methods=["POST"]),
        *(Route(path, cached_route(answers), methods=list(answers)) for path, answers in by_path.items()),
    ]


def _json_bytes(body: bytes, gzipped: bool, caller: Caller, outcome: str) -> Response:
    headers = dict(caller.headers)
    headers["X-Cache"] = outcome
    if gzipped:  # passes through GzipWhenAccepted untouched
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Response(body, 200, headers=headers, media_type=JSON_TYPE)
