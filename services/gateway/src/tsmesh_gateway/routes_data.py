"""``/v1/write`` and the query routes; identical authorized queries are served from the micro-cache."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from google.protobuf.message import Message
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tsmesh.v1 import query_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_gateway import convert
from tsmesh_gateway.bodies import JSON_TYPE, JSONResponse, json_object, parse_json
from tsmesh_gateway.compression import MINIMUM_SIZE, accepts_gzip
from tsmesh_gateway.deps import Caller, Deps, endpoint

Render = Callable[[Any], Awaitable[bytes]]
# (caller, raw request: JSON body or query string, client accepts gzip)
#   -> (JSON body, gzipped or not, X-Cache outcome)
CachedAnswer = Callable[[Caller, bytes, bool], Awaitable[tuple[bytes, bool, str]]]


def query_routes(deps: Deps, handlers: dict[tuple[str, str], CachedAnswer] | None = None) -> list[Route]:
    """Write and query routes bound to ``deps`` (``handlers``: the shared :func:`cached_queries`)."""
    if handlers is None:
        handlers = cached_queries(deps)
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


def cached_queries(deps: Deps) -> dict[tuple[str, str], CachedAnswer]:
    """The cached query routes by ``(method, path)``: ``POST`` ones take a JSON body, ``GET
    /v1/query/range`` a query string (:func:`tsmesh_gateway.convert.range_from_query`).

    Shared by the Starlette routes and the pure-ASGI fast path (:mod:`tsmesh_gateway.fastpath`)."""
    query = deps.upstreams.query
    stub = deps.upstreams.query_stub
    in_flight: dict[tuple[str, bytes, int | None], asyncio.Future[bytes]] = {}
    max_depth = deps.cfg.max_json_depth
    cache = deps.cache

    def from_json(build: Callable[[Any], Message]) -> Callable[[bytes], Message]:
        return lambda raw: build(json_object(parse_json(raw, max_depth)))

    def cached(kind: str, parse: Callable[[bytes], Message], call: Render) -> CachedAnswer:
        prefix = kind.encode() + b"\0"

        async def answer(caller: Caller, raw: bytes, gzip_ok: bool) -> tuple[bytes, bool, str]:
            tenant = caller.principal.tenant_id
            # short requests (the GET query strings, small bodies) are their own key; longer ones a digest
            key = prefix + raw if len(raw) <= 512 else b"#" + hashlib.blake2b(prefix + raw, digest_size=16).digest()
            generation = cache.current(tenant)
            if generation is None:
                generation = await cache.generation(tenant)
            if generation is not None:
                hit = cache.get(tenant, key, generation)
                if hit is not None:
                    if gzip_ok and len(hit) >= MINIMUM_SIZE:
                        return cache.gzipped(tenant, key, hit), True, "hit"
                    return hit, False, "hit"
            message = parse(raw)
            flight_key = (tenant, key, generation)
            flight = in_flight.get(flight_key)
            if flight is not None:
                body = await asyncio.shield(flight)
                outcome = "shared"
            else:
                flight = in_flight[flight_key] = asyncio.ensure_future(call((message, caller)))
                try:
                    body = await asyncio.shield(flight)
                finally:
                    in_flight.pop(flight_key, None)
                if generation is not None:
                    cache.put(tenant, key, generation, body)
                outcome = "miss" if generation is not None else "bypass"
            if gzip_ok and len(body) >= MINIMUM_SIZE:
                return cache.gzipped(tenant, key, body), True, outcome
            return body, False, outcome

        return answer

    async def call_range(arg: tuple[query_pb2.QueryRangeRequest, Caller]) -> bytes:
        message, caller = arg
        answer = await query.unary(stub.QueryRange, message, authorization=caller.authorization, idempotent=True)
        return orjson.dumps(convert.range_to_json(answer))

    async def call_latest(arg: tuple[query_pb2.LatestRequest, Caller]) -> bytes:
        message, caller = arg
        answer = await query.unary(stub.Latest, message, authorization=caller.authorization, idempotent=True)
        return orjson.dumps({"points": [convert.point_to_json(p) for p in answer.points]})

    async def call_series(arg: tuple[query_pb2.ListSeriesRequest, Caller]) -> bytes:
        message, caller = arg
        answer = await query.unary(stub.ListSeries, message, authorization=caller.authorization, idempotent=True)
        return orjson.dumps({"series": [{"metric": s.metric, "labels": dict(s.labels)} for s in answer.series]})

    async def call_label_values(arg: tuple[query_pb2.LabelValuesRequest, Caller]) -> bytes:
        message, caller = arg
        answer = await query.unary(stub.LabelValues, message, authorization=caller.authorization, idempotent=True)
        return orjson.dumps({"values": list(answer.values)})

    def build_latest(obj: dict[str, Any]) -> Message:
        return query_pb2.LatestRequest(selector=convert.selector_from_json(obj.get("selector")))

    def build_series(obj: dict[str, Any]) -> Message:
        return query_pb2.ListSeriesRequest(
            selector=convert.selector_from_json(obj.get("selector")), limit=convert.limit_from_json(obj)
        )

    def build_label_values(obj: dict[str, Any]) -> Message:
        label = obj.get("label")
        if not isinstance(label, str) or not label or len(label) > 256:
            raise InvalidArgument("label", "must be a non-empty string")
        request = query_pb2.LabelValuesRequest(label=label)
        if "selector" in obj:
            request.selector.CopyFrom(convert.selector_from_json(obj["selector"]))
        return request

    return {
        ("POST", "/v1/query/range"): cached("range", from_json(convert.range_from_json), call_range),
        ("GET", "/v1/query/range"): cached("range?", convert.range_from_query, call_range),
        ("POST", "/v1/query/latest"): cached("latest", from_json(build_latest), call_latest),
        ("POST", "/v1/series"): cached("series", from_json(build_series), call_series),
        ("POST", "/v1/labels/values"): cached("labels", from_json(build_label_values), call_label_values),
    }


def _json_bytes(body: bytes, gzipped: bool, caller: Caller, outcome: str) -> Response:
    headers = dict(caller.headers)
    headers["X-Cache"] = outcome
    if gzipped:  # passes through GzipWhenAccepted untouched
        headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
    return Response(body, 200, headers=headers, media_type=JSON_TYPE)
