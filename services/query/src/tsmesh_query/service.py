"""The gRPC QueryService: every call needs scope ``read`` and sees only the caller's tenant.

``QueryRange`` is registered without serializers: it receives the request's wire bytes (parsed
only on a miss of the memo of parsed requests) and answers serialized ``QueryRangeResponse`` bytes
(the engine encodes and caches them that way), which gRPC sends as they are.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from tsmesh.v1 import query_pb2

from tsmesh_common.context import current_principal
from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits
from tsmesh_query.engine import RangeEngine
from tsmesh_query.live import LiveHub
from tsmesh_query.lookups import Lookups
from tsmesh_query.plan import RangeQuery, parse_range
from tsmesh_query.promql.rpc import PromRpc
from tsmesh_query.promql.series_selector import selector_from_promql
from tsmesh_query.selectors import parse_selector

SERVICE_NAME = "tsmesh.v1.QueryService"
PARSED_CACHE_SIZE = 4096


class QueryService:
    """Thin handlers: validate, take the tenant from the principal, delegate."""

    def __init__(self, engine: RangeEngine, lookups: Lookups, hub: LiveHub, limits: QueryLimits, prom: PromRpc) -> None:
        self._engine = engine
        self._prom = prom
        self._lookups = lookups
        self._hub = hub
        self._limits = limits
        self._parsed: dict[bytes, RangeQuery] = {}

    async def QueryRange(self, request: bytes, context: Any) -> bytes:
        """A serialized QueryRangeResponse for a serialized QueryRangeRequest."""
        tenant = current_principal("read").tenant_id
        return await self._engine.query_range(tenant, self._parse(request))

    def _parse(self, raw: bytes) -> RangeQuery:
        """``parse_range`` memoized on the request's wire bytes (dashboards repeat the same requests):
        a repeated request is neither parsed nor validated again."""
        query = self._parsed.get(raw)
        if query is None:
            try:
                request = query_pb2.QueryRangeRequest.FromString(raw)
            except DecodeError:
                raise InvalidArgument("request", "not a valid QueryRangeRequest") from None
            query = parse_range(request, self._limits)
            if len(self._parsed) >= PARSED_CACHE_SIZE:
                self._parsed.clear()
            self._parsed[raw] = query
        return query

    async def Latest(self, request: query_pb2.LatestRequest, context: Any) -> query_pb2.LatestResponse:
        tenant = current_principal("read").tenant_id
        points = await self._lookups.latest(tenant, parse_selector(request.selector, self._limits))
        return query_pb2.LatestResponse(points=points)

    async def ListSeries(self, request: query_pb2.ListSeriesRequest, context: Any) -> query_pb2.ListSeriesResponse:
        tenant = current_principal("read").tenant_id
        selector = parse_selector(request.selector, self._limits)
        rows = await self._lookups.list_series(tenant, selector, request.limit)
        return query_pb2.ListSeriesResponse(
            series=[query_pb2.SeriesInfo(metric=selector.metric, labels=row.labels) for row in rows]
        )

    async def LabelValues(self, request: query_pb2.LabelValuesRequest, context: Any) -> query_pb2.LabelValuesResponse:
        tenant = current_principal("read").tenant_id
        selector = None
        if request.HasField("selector") and (request.selector.metric or request.selector.matchers):
            # matchers without a metric are refused (selector.metric is required), never ignored
            selector = parse_selector(request.selector, self._limits)
        values = await self._lookups.label_values(tenant, request.label, selector)
        return query_pb2.LabelValuesResponse(values=values)

    async def Subscribe(
        self, request: query_pb2.SubscribeRequest, context: Any
    ) -> AsyncIterator[query_pb2.SubscribeResponse]:
        principal = current_principal("read")
        selector = parse_selector(request.selector, self._limits)
        stream = self._hub.stream(principal.tenant_id, selector, principal.token_id, principal.expires_at)
        async for response in stream:
            yield response

    async def ParseSelector(
        self, request: query_pb2.ParseSelectorRequest, context: Any
    ) -> query_pb2.ParseSelectorResponse:
        current_principal("read")
        return query_pb2.ParseSelectorResponse(selector=selector_from_promql(request.promql, self._limits))

    async def PromQuery(self, request: query_pb2.PromQueryRequest, context: Any) -> query_pb2.PromQueryResponse:
        return await self._prom.query(current_principal("read").tenant_id, request)

    async def PromQueryRange(
        self, request: query_pb2.PromQueryRangeRequest, context: Any
    ) -> query_pb2.PromQueryResponse:
        return await self._prom.query_range(current_principal("read").tenant_id, request)

    async def PromSeries(self, request: query_pb2.PromSeriesRequest, context: Any) -> query_pb2.PromSeriesResponse:
        return await self._prom.series(current_principal("read").tenant_id, request)

    async def PromLabelNames(
        self, request: query_pb2.PromLabelNamesRequest, context: Any
    ) -> query_pb2.PromLabelNamesResponse:
        return await self._prom.label_names(current_principal("read").tenant_id, request)

    async def PromLabelValues(
        self, request: query_pb2.PromLabelValuesRequest, context: Any
    ) -> query_pb2.PromLabelValuesResponse:
        return await self._prom.label_values(current_principal("read").tenant_id, request)


def _unary(method: Any, request: Any, response: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=request.FromString, response_serializer=response.SerializeToString
    )


def add_to_server(servicer: QueryService, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as ``tsmesh.v1.QueryService`` (what the generated
    ``add_QueryServiceServicer_to_server`` does, with QueryRange answering wire bytes)."""
    handlers = {
        "QueryRange": grpc.unary_unary_rpc_method_handler(
            servicer.QueryRange,
            request_deserializer=None,  # parsed by the servicer, only when not memoized
            response_serializer=None,  # already serialized
        ),
        "Latest": grpc.unary_unary_rpc_method_handler(
            servicer.Latest,
            request_deserializer=query_pb2.LatestRequest.FromString,
            response_serializer=query_pb2.LatestResponse.SerializeToString,
        ),
        "ListSeries": grpc.unary_unary_rpc_method_handler(
            servicer.ListSeries,
            request_deserializer=query_pb2.ListSeriesRequest.FromString,
            response_serializer=query_pb2.ListSeriesResponse.SerializeToString,
        ),
        "LabelValues": grpc.unary_unary_rpc_method_handler(
            servicer.LabelValues,
            request_deserializer=query_pb2.LabelValuesRequest.FromString,
            response_serializer=query_pb2.LabelValuesResponse.SerializeToString,
        ),
        "ParseSelector": _unary(
            servicer.ParseSelector, query_pb2.ParseSelectorRequest, query_pb2.ParseSelectorResponse
        ),
        "PromQuery": _unary(servicer.PromQuery, query_pb2.PromQueryRequest, query_pb2.PromQueryResponse),
        "PromQueryRange": _unary(servicer.PromQueryRange, query_pb2.PromQueryRangeRequest, query_pb2.PromQueryResponse),
        "PromSeries": _unary(servicer.PromSeries, query_pb2.PromSeriesRequest, query_pb2.PromSeriesResponse),
        "PromLabelNames": _unary(
            servicer.PromLabelNames, query_pb2.PromLabelNamesRequest, query_pb2.PromLabelNamesResponse
        ),
        "PromLabelValues": _unary(
            servicer.PromLabelValues, query_pb2.PromLabelValuesRequest, query_pb2.PromLabelValuesResponse
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            servicer.Subscribe,
            request_deserializer=query_pb2.SubscribeRequest.FromString,
            response_serializer=query_pb2.SubscribeResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)  # type: ignore[attr-defined]  # not in the stubs
