"""``/v1/admin/...``: the data lifecycle (retention, delete, export, cardinality) for ``admin`` tokens.

The scope is checked by the owning service (ingest's writer for retention, delete and cardinality;
query for export), which also reports refusals and deletions to the audit log; a read- or
write-scoped token gets its 403 from there. Export streams: the first chunk is awaited before the
answer starts, so a refusal is still a JSON error, then chunks are passed on as they come.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from tsmesh.v1 import export_pb2, lifecycle_pb2

from tsmesh_common.client import outgoing_metadata
from tsmesh_common.errors import InvalidArgument
from tsmesh_gateway import convert
from tsmesh_gateway.bodies import JSONResponse, json_object
from tsmesh_gateway.deps import Caller, Deps, endpoint

RETENTION_FIELDS = ("raw_days", "rollup_1m_days", "rollup_1h_days")
EXPORT_FORMATS = {"jsonl": export_pb2.EXPORT_FORMAT_JSONL, "csv": export_pb2.EXPORT_FORMAT_CSV}
EXPORT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
EXPORT_DEADLINE_S = 6 * 3600.0
MAX_DAYS = 36_600


def retention_to_json(answer: lifecycle_pb2.Retention) -> dict[str, Any]:
    """The tenant's own days (``null`` where the default applies) and the defaults."""
    own = {f: getattr(answer.tenant, f) or None for f in RETENTION_FIELDS}
    return {**own, "defaults": {f: getattr(answer.defaults, f) for f in RETENTION_FIELDS}}


def retention_from_json(body: dict[str, Any]) -> lifecycle_pb2.SetRetentionRequest:
    """``{"raw_days": 14, "rollup_1m_days": null}``: a number sets, ``null`` returns to the default."""
    unknown = sorted(set(body) - set(RETENTION_FIELDS))
    if unknown:
        raise InvalidArgument(unknown[0], f"unknown field (expected {', '.join(RETENTION_FIELDS)})")
    if not body:
        raise InvalidArgument("body", f"needs at least one of {', '.join(RETENTION_FIELDS)}")
    request = lifecycle_pb2.SetRetentionRequest()
    for name, value in body.items():
        if isinstance(value, float) and value.is_integer():  # 14.0 is an integer in JSON
            value = int(value)
        if value is None:
            setattr(request, name, 0)
        elif isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_DAYS:
            setattr(request, name, value)
        else:
            raise InvalidArgument(name, f"must be between 1 and {MAX_DAYS} days, or null (the default)")
    return request


def export_from_json(body: dict[str, Any], fmt: export_pb2.ExportFormat.ValueType) -> export_pb2.ExportRequest:
    """Raw points (``selector``, ``start_ns``, ``end_ns``) or, with ``"source": "query"``, a range query."""
    source = body.get("source", "raw")
    if source not in ("raw", "query"):
        raise InvalidArgument("source", "must be raw or query")
    query = convert.range_from_json({k: v for k, v in body.items() if k != "source"})  # the same checks either way
    if source == "query":
        return export_pb2.ExportRequest(format=fmt, query=query)
    return export_pb2.ExportRequest(format=fmt, selector=query.selector, start_ns=query.start_ns, end_ns=query.end_ns)


def export_from_query(raw: bytes, fmt: export_pb2.ExportFormat.ValueType) -> export_pb2.ExportRequest:
    """``GET /v1/admin/export?metric=cpu&match=host%3Da&start_ns=..&end_ns=..`` (``source=query`` adds
    ``step_ns``, ``aggregation``...): the parameters of ``GET /v1/query/range``."""
    pairs = parse_qsl(raw.decode("ascii", "replace"), keep_blank_values=True)
    source = next((v for k, v in pairs if k == "source"), "raw")
    rest = urlencode([(k, v) for k, v in pairs if k not in ("format", "source")]).encode()
    query = convert.range_from_query(rest)
    if source == "query":
        return export_pb2.ExportRequest(format=fmt, query=query)
    if source != "raw":
        raise InvalidArgument("source", "must be raw or query")
    return export_pb2.ExportRequest(format=fmt, selector=query.selector, start_ns=query.start_ns, end_ns=query.end_ns)


def admin_routes(deps: Deps) -> list[Route]:
    """The admin routes bound to ``deps``."""
    upstreams = deps.upstreams
    writer = upstreams.lifecycle_upstream
    lifecycle = upstreams.lifecycle_stub

    async def caller_of(request: Request, route_class: str) -> Caller:
        # The scope is checked here, before any parameter or body is read: a token without it gets
        # 403 whatever it sent (the owning service checks it again).
        return await deps.authorize(request, route_class, "admin")

    @endpoint
    async def retention(request: Request) -> Response:
        if request.method == "GET":
            caller = await caller_of(request, "query")
            answer = await writer.unary(
                lifecycle.GetRetention,
                lifecycle_pb2.GetRetentionRequest(),
                authorization=caller.authorization,
                idempotent=True,
            )
        else:
            caller = await caller_of(request, "write")
            message = retention_from_json(json_object(await deps.json(request)))
            answer = await writer.unary(lifecycle.SetRetention, message, authorization=caller.authorization)
        return JSONResponse(retention_to_json(answer), headers=caller.headers)

    @endpoint
    async def delete(request: Request) -> Response:
        caller = await caller_of(request, "write")
        body = json_object(await deps.json(request))
        message = lifecycle_pb2.DeleteSeriesRequest(
            selector=convert.selector_from_json(body.get("selector")),
            start_ns=convert._int(body, "start_ns", "start_ns"),
            end_ns=convert._int(body, "end_ns", "end_ns"),
        )
        answer = await writer.unary(lifecycle.DeleteSeries, message, authorization=caller.authorization)
        return JSONResponse({"series": answer.series, "points_deleted": answer.points_deleted}, headers=caller.headers)

    @endpoint
    async def cardinality(request: Request) -> Response:
        caller = await caller_of(request, "query")
        raw_limit = request.query_params.get("limit", "10")
        if not raw_limit.isdigit() or not 0 < int(raw_limit) <= 1000:
            raise InvalidArgument("limit", "must be between 1 and 1000")
        answer = await writer.unary(
            lifecycle.GetCardinality,
            lifecycle_pb2.GetCardinalityRequest(limit=int(raw_limit)),
            authorization=caller.authorization,
            idempotent=True,
        )
        return JSONResponse(
            {
                "series_per_metric": [{"metric": m.metric, "series": m.series} for m in answer.series_per_metric],
                "top_labels": [{"label": x.label, "values": x.values} for x in answer.top_labels],
                "total_series": answer.total_series,
                "active_series": answer.active_series,
                "max_active_series": answer.max_active_series,
            },
            headers=caller.headers,
        )

    @endpoint
    async def export(request: Request) -> Response:
        caller = await caller_of(request, "query")
        name = request.query_params.get("format", "jsonl")
        if name not in EXPORT_FORMATS:
            raise InvalidArgument("format", "must be jsonl or csv")
        if request.method == "GET":
            message = export_from_query(request.scope["query_string"], EXPORT_FORMATS[name])
        else:
            message = export_from_json(json_object(await deps.json(request)), EXPORT_FORMATS[name])
        call = upstreams.export_stub.Export(
            message, timeout=EXPORT_DEADLINE_S, metadata=outgoing_metadata(caller.authorization)
        )
        chunks = call.__aiter__()
        try:
            first = await chunks.__anext__()
        except StopAsyncIteration:
            first = export_pb2.ExportChunk()

        async def body() -> AsyncIterator[bytes]:
            try:
                yield first.data
                async for chunk in chunks:
                    yield chunk.data
            finally:
                call.cancel()

        headers = dict(caller.headers)
        headers["Content-Disposition"] = f'attachment; filename="export.{name}"'
        return StreamingResponse(body(), media_type=EXPORT_TYPES[name], headers=headers)

    return [
        Route("/v1/admin/retention", retention, methods=["GET", "PUT"]),
        Route("/v1/admin/delete", delete, methods=["POST"]),
        Route("/v1/admin/export", export, methods=["GET", "POST"]),
        Route("/v1/admin/cardinality", cardinality, methods=["GET"]),
    ]
