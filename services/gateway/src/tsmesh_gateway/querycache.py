"""The cached query routes' answers: the micro-cache in front of the query service.

:class:`QueryCache` makes one :class:`CachedRoute` per route (:meth:`QueryCache.handlers`;
``GET /v1/query/range`` is the hot dashboard path) with the route's key prefix, parser and upstream
call; its :meth:`CachedRoute.answer` keys the request, serves a hit of the tenant's current
generation, or makes one upstream call shared by identical concurrent misses, stores the JSON and
gzips it for clients that accept it. The handler is that bound method: a hit reads its route from
slots, with no ``partial`` re-packing six arguments (measured: ``bench/bench_querycache_hit.py``).
Shared by the Starlette routes (:mod:`tsmesh_gateway.routes.data`) and the pure-ASGI fast path
(:mod:`tsmesh_gateway.fastpath`).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from google.protobuf.message import Message
from tsmesh.v1 import query_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_gateway import convert
from tsmesh_gateway.bodies import json_object, parse_json
from tsmesh_gateway.compression import MINIMUM_SIZE
from tsmesh_gateway.deps import Caller, Deps
from tsmesh_gateway.microcache import MicroCache

# (caller, raw request: JSON body or query string, client accepts gzip)
#   -> (JSON body, gzipped or not, X-Cache outcome)
CachedAnswer = Callable[[Caller, bytes, bool], Awaitable[tuple[bytes, bool, str]]]
Upstream = Callable[[Any, Caller], Awaitable[bytes]]
# requests up to this size (GET query strings, small bodies) are their own key; longer ones a digest
MAX_RAW_KEY = 512
_RANGE, _RANGE_GET, _LATEST, _SERIES, _LABELS = (
    k + b"\0" for k in (b"range", b"range?", b"latest", b"series", b"labels")
)


class QueryCache:
    """The answers of the cached query routes, by route (:meth:`handlers`)."""

    def __init__(self, deps: Deps) -> None:
        self._cache = deps.cache
        self._query = deps.upstreams.query
        self._stub = deps.upstreams.query_stub
        self._max_depth = deps.cfg.max_json_depth
        self._in_flight: dict[tuple[str, bytes, int | None], asyncio.Future[bytes]] = {}
        self._parse_range = self._json(convert.range_from_json)
        self._parse_latest = self._json(_latest_request)
        self._parse_series = self._json(_series_request)
        self._parse_labels = self._json(_label_values_request)

    def handlers(self) -> dict[tuple[str, str], CachedAnswer]:
        """The handler of each cached route by ``(method, path)``: :meth:`CachedRoute.answer` of the
        route's :class:`CachedRoute`."""
        routes: dict[tuple[str, str], tuple[bytes, Callable[[bytes], Message], Upstream]] = {
            ("GET", "/v1/query/range"): (_RANGE_GET, convert.range_from_query, self._range),
            ("POST", "/v1/query/range"): (_RANGE, self._parse_range, self._range),
            ("POST", "/v1/query/latest"): (_LATEST, self._parse_latest, self._latest),
            ("POST", "/v1/series"): (_SERIES, self._parse_series, self._series),
            ("POST", "/v1/labels/values"): (_LABELS, self._parse_labels, self._labels),
        }
        return {
            route: CachedRoute(self._cache, self._in_flight, prefix, parse, call).answer
            for route, (prefix, parse, call) in routes.items()
        }

    def _json(self, build: Callable[[Any], Message]) -> Callable[[bytes], Message]:
        max_depth = self._max_depth
        return lambda raw: build(json_object(parse_json(raw, max_depth)))

    async def _range(self, message: query_pb2.QueryRangeRequest, caller: Caller) -> bytes:
        answer = await self._query.unary(
            self._stub.QueryRange, message, authorization=caller.authorization, idempotent=True
        )
        return orjson.dumps(convert.range_to_json(answer))

    async def _latest(self, message: query_pb2.LatestRequest, caller: Caller) -> bytes:
        answer = await self._query.unary(
            self._stub.Latest, message, authorization=caller.authorization, idempotent=True
        )
        return orjson.dumps({"points": [convert.point_to_json(p) for p in answer.points]})

    async def _series(self, message: query_pb2.ListSeriesRequest, caller: Caller) -> bytes:
        answer = await self._query.unary(
            self._stub.ListSeries, message, authorization=caller.authorization, idempotent=True
        )
        return orjson.dumps({"series": [{"metric": s.metric, "labels": dict(s.labels)} for s in answer.series]})

    async def _labels(self, message: query_pb2.LabelValuesRequest, caller: Caller) -> bytes:
        answer = await self._query.unary(
            self._stub.LabelValues, message, authorization=caller.authorization, idempotent=True
        )
        return orjson.dumps({"values": list(answer.values)})


class CachedRoute:
    """One cached route over the worker's micro-cache and single-flight table: its key prefix,
    request parser and upstream call."""

    __slots__ = ("_cache", "_call", "_in_flight", "_parse", "_prefix")

    def __init__(
        self,
        cache: MicroCache,
        in_flight: dict[tuple[str, bytes, int | None], asyncio.Future[bytes]],
        prefix: bytes,
        parse: Callable[[bytes], Message],
        call: Upstream,
    ) -> None:
        self._cache = cache
        self._in_flight = in_flight
        self._prefix = prefix
        self._parse = parse
        self._call = call

    async def answer(self, caller: Caller, raw: bytes, gzip_ok: bool) -> tuple[bytes, bool, str]:
        """The JSON answer to ``raw``: a hit of the tenant's current generation, else one upstream
        call shared by identical concurrent requests (stored when the generation is known)."""
        prefix = self._prefix
        cache = self._cache
        tenant = caller.principal.tenant_id
        key = prefix + raw if len(raw) <= MAX_RAW_KEY else b"#" + hashlib.blake2b(prefix + raw, digest_size=16).digest()
        generation = cache.current(tenant)
        if generation is None:
            generation = await cache.generation(tenant)
        if generation is not None:
            hit = cache.get(tenant, key, generation)
            if hit is not None:
                if gzip_ok and len(hit) >= MINIMUM_SIZE:
                    return cache.gzipped(tenant, key, hit), True, "hit"
                return hit, False, "hit"
        message = self._parse(raw)
        flight_key = (tenant, key, generation)
        in_flight = self._in_flight
        flight = in_flight.get(flight_key)
        if flight is not None:
            body = await asyncio.shield(flight)
            outcome = "shared"
        else:
            flight = in_flight[flight_key] = asyncio.ensure_future(self._call(message, caller))
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


def _latest_request(obj: dict[str, Any]) -> Message:
    return query_pb2.LatestRequest(selector=convert.selector_from_json(obj.get("selector")))


def _series_request(obj: dict[str, Any]) -> Message:
    return query_pb2.ListSeriesRequest(
        selector=convert.selector_from_json(obj.get("selector")), limit=convert.limit_from_json(obj)
    )


def _label_values_request(obj: dict[str, Any]) -> Message:
    label = obj.get("label")
    if not isinstance(label, str) or not label or len(label) > 256:
        raise InvalidArgument("label", "must be a non-empty string")
    request = query_pb2.LabelValuesRequest(label=label)
    if "selector" in obj:
        request.selector.CopyFrom(convert.selector_from_json(obj["selector"]))
    return request
