"""The gRPC QueryService: every call needs scope ``read`` and sees only the caller's tenant."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from tsmesh.v1 import query_pb2, query_pb2_grpc

from tsmesh_common.context import current_principal
from tsmesh_query.config import QueryLimits
from tsmesh_query.engine import RangeEngine
from tsmesh_query.live import LiveHub
from tsmesh_query.lookups import Lookups
from tsmesh_query.plan import RangeQuery, parse_range
from tsmesh_query.selectors import parse_selector

SERVICE_NAME = "tsmesh.v1.QueryService"
PARSED_CACHE_SIZE = 4096


class QueryService(query_pb2_grpc.QueryServiceServicer):
    """Thin handlers: validate, take the tenant from the principal, delegate."""

    def __init__(self, engine: RangeEngine, lookups: Lookups, hub: LiveHub, limits: QueryLimits) -> None:
        self._engine = engine
        self._lookups = lookups
        self._hub = hub
        self._limits = limits
        self._parsed: dict[bytes, RangeQuery] = {}

    async def QueryRange(self, request: query_pb2.QueryRangeRequest, context: Any) -> query_pb2.QueryRangeResponse:
        tenant = current_principal("read").tenant_id
        return await self._engine.query_range(tenant, self._parse(request))

    def _parse(self, request: query_pb2.QueryRangeRequest) -> RangeQuery:
        """``parse_range`` memoized on the request bytes (dashboards repeat the same requests)."""
        key = request.SerializeToString()
        query = self._parsed.get(key)
        if query is None:
            query = parse_range(request, self._limits)
            if len(self._parsed) >= PARSED_CACHE_SIZE:
                self._parsed.clear()
            self._parsed[key] = query
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
