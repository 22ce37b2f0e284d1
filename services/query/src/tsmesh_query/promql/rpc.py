"""The PromQL RPCs: protobuf requests to the engine and the catalog, results to protobuf."""

from __future__ import annotations

from tsmesh.v1 import query_pb2

from tsmesh_query.promql.catalog import Catalog
from tsmesh_query.promql.encode import Result
from tsmesh_query.promql.engine import PromEngine
from tsmesh_query.promql.results import ResultCache
from tsmesh_query.promql.values import Labels


def _labels(labels: Labels) -> list[query_pb2.PromLabel]:
    return [query_pb2.PromLabel(name=k, value=v) for k, v in labels]


def _response(result: Result) -> query_pb2.PromQueryResponse:
    return query_pb2.PromQueryResponse(
        result_type=result.result_type,
        string_value=result.text,
        series=[
            query_pb2.PromSeriesResult(labels=_labels(s.labels), timestamps_ms=s.ts, values=s.values)
            for s in result.series
        ],
    )


class PromRpc:
    """Handlers of the Prom* RPCs for an already authorized tenant."""

    def __init__(self, engine: PromEngine, catalog: Catalog, results: ResultCache) -> None:
        self._engine = engine
        self._catalog = catalog
        self.results = results

    async def query(self, tenant: str, request: query_pb2.PromQueryRequest) -> query_pb2.PromQueryResponse:
        async def compute() -> query_pb2.PromQueryResponse:
            timeout = request.timeout_ms / 1000
            return _response(await self._engine.query(tenant, request.query, request.time_ms, timeout))

        return await self.results.answer(tenant, request, compute)

    async def query_range(self, tenant: str, request: query_pb2.PromQueryRangeRequest) -> query_pb2.PromQueryResponse:
        async def compute() -> query_pb2.PromQueryResponse:
            r = request
            result = await self._engine.query_range(
                tenant, r.query, r.start_ms, r.end_ms, r.step_ms, r.timeout_ms / 1000
            )
            return _response(result)

        return await self.results.answer(tenant, request, compute)

    async def series(self, tenant: str, request: query_pb2.PromSeriesRequest) -> query_pb2.PromSeriesResponse:
        found = await self._catalog.series(tenant, list(request.match), request.start_ms, request.end_ms, request.limit)
        return query_pb2.PromSeriesResponse(series=[query_pb2.PromLabelSet(labels=_labels(s)) for s in found])

    async def label_names(
        self, tenant: str, request: query_pb2.PromLabelNamesRequest
    ) -> query_pb2.PromLabelNamesResponse:
        names = await self._catalog.label_names(
            tenant, list(request.match), request.start_ms, request.end_ms, request.limit
        )
        return query_pb2.PromLabelNamesResponse(names=names)

    async def label_values(
        self, tenant: str, request: query_pb2.PromLabelValuesRequest
    ) -> query_pb2.PromLabelValuesResponse:
        values = await self._catalog.label_values(
            tenant, request.label, list(request.match), request.start_ms, request.end_ms, request.limit
        )
        return query_pb2.PromLabelValuesResponse(values=values)
