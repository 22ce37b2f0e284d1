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
from tsmesh_gateway.deps import Caller, Deps, endpoint

Render = Callable[[Any], Awaitable[bytes]]


def query_routes(deps: Deps) -> list[Route]:
    """Write and query routes bound to ``deps``."""
    query = deps.upstreams.query
    stub = deps.upstreams.query_stub
    ingest = deps.upstreams.ingest
    ingest_stub = deps.upstreams.ingest_stub

    in_flight: dict[tuple[str, bytes, bytes | None], asyncio.Future[bytes]] = {}

    async def cached(request: Request, kind: str, build: Callable[[Any], Message], call: Render) -> Response:
        caller = await deps.authorize(request, "query", "read")
        raw = await deps.body(request)
        tenant = caller.principal.tenant_id
        key = hashlib.blake2b(kind.encode() + b"\0" + raw, digest_size=16).digest()
        generation = await deps.cache.generation(tenant)
        if generation is not None:
            hit = deps.cache.get(tenant, key, generation)
            if hit is not None:
                return _json_bytes(hit, caller, "hit")
        message = build(json_object(parse_json(raw, deps.cfg.max_json_depth)))
        flight_key = (tenant, key, generation)
        flight = in_flight.get(flight_key)
        if flight is not None:
            return _json_bytes(await asyncio.shield(flight), caller, "shared")
        flight = in_flight[flight_key] = asyncio.ensure_future(call((message, caller)))
        try:
            body = await asyncio.shield(flight)
        finally:
            in_flight.pop(flight_key, None)
        if generation is not None:
            deps.cache.put(tenant, key, generation, body)
        return _json_bytes(body, caller, "miss" if generation is not None else "bypass")

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

    @endpoint
    async def query_range(request: Request) -> Response:
        return await cached(request, "range", convert.range_from_json, call_range)

    @endpoint
    async def latest(request: Request) -> Response:
        return await cached(request, "latest", build_latest, call_latest)

    @endpoint
    async def series(request: Request) -> Response:
        return await cached(request, "series", build_series, call_series)

    @endpoint
    async def label_values(request: Request) -> Response:
        return await cached(request, "labels", build_label_values, call_label_values)

    @endpoint
    async def write(request: Request) -> Response:
        caller = await deps.authorize(request, "write", "write")
        message = convert.write_from_json(await deps.json(request))
        answer = await ingest.unary(ingest_stub.WriteBatch, message, authorization=caller.authorization)
        return JSONResponse(convert.write_to_json(answer), headers=caller.headers)

    return [
        Route("/v1/write", write, methods=["POST"]),
        Route("/v1/query/range", query_range, methods=["POST"]),
        Route("/v1/query/latest", latest, methods=["POST"]),
        Route("/v1/series", series, methods=["POST"]),
        Route("/v1/labels/values", label_values, methods=["POST"]),
    ]


def _json_bytes(body: bytes, caller: Caller, outcome: str) -> Response:
    headers = dict(caller.headers)
    headers["X-Cache"] = outcome
    return Response(body, 200, headers=headers, media_type=JSON_TYPE)
