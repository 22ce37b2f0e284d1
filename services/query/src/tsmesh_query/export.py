"""``tsmesh.v1.DataExportService``: raw points or a range query's buckets as JSON lines or CSV, streamed.

Raw points are read through a server-side cursor (:meth:`tsmesh_query.store.Database.cursor`) and
sent in chunks of whole lines as they are encoded, so memory stays constant whatever the size; gRPC
flow control holds the cursor back when the client reads slowly. A query's answer is bounded by the
query limits and encoded the same way. Scope ``admin``: an export reads everything a tenant has.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import AsyncIterator, Iterable
from typing import Any

import grpc
import orjson
from tsmesh.v1 import export_pb2, export_pb2_grpc, query_pb2

from tsmesh_common.audit import AuditReporter
from tsmesh_common.context import current_principal
from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits
from tsmesh_query.engine import RangeEngine
from tsmesh_query.plan import parse_range
from tsmesh_query.selectors import parse_selector
from tsmesh_query.series import SeriesRow, resolve_series
from tsmesh_query.store import Database

SERVICE_NAME = "tsmesh.v1.DataExportService"
CHUNK_BYTES = 256 * 1024
POINTS_SQL = (
    "SELECT series_id, ts, value FROM ts.points WHERE series_id = ANY($1::bigint[]) AND ts >= $2 AND ts < $3 "
    "ORDER BY series_id, ts"
)


class ExportService(export_pb2_grpc.DataExportServiceServicer):
    """Streams the caller's tenant's data out (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        engine: RangeEngine,
        limits: QueryLimits,
        *,
        audit: AuditReporter | None = None,
        prefetch: int = 5000,
    ) -> None:
        self._audit = audit
        self._db = db
        self._engine = engine
        self._limits = limits
        self._prefetch = prefetch

    async def Export(self, request: export_pb2.ExportRequest, context: Any) -> AsyncIterator[export_pb2.ExportChunk]:
        tenant = current_principal("admin").tenant_id
        if request.format not in (export_pb2.EXPORT_FORMAT_JSONL, export_pb2.EXPORT_FORMAT_CSV):
            raise InvalidArgument("format", "must be jsonl or csv")
        csv_out = request.format == export_pb2.EXPORT_FORMAT_CSV
        if self._audit is not None:
            what = (
                "query"
                if request.HasField("query")
                else f"raw {request.selector.metric} [{request.start_ns}, {request.end_ns})"
            )
            authorization = dict(context.invocation_metadata() or ()).get("authorization", "")
            self._audit.report(str(authorization), "export", "started", f"Export {what}")
        if request.HasField("query"):
            lines = self._query_lines(tenant, request, csv_out)
        else:
            lines = self._raw_lines(tenant, request, csv_out)
        async for chunk in _chunks(lines):
            yield chunk

    async def _raw_lines(self, tenant: str, request: export_pb2.ExportRequest, csv_out: bool) -> AsyncIterator[bytes]:
        if request.end_ns <= request.start_ns:
            raise InvalidArgument("end_ns", "must be after start_ns")
        selector = parse_selector(request.selector, self._limits)

        async def find(conn: Any, timeout: float) -> list[SeriesRow]:
            return await resolve_series(conn, timeout, tenant, selector, self._limits)

        series = {row.series_id: row.labels for row in await self._db.read(find)}
        names = sorted({name for labels in series.values() for name in labels})
        metric = selector.metric
        if csv_out:
            yield _csv_row(["metric", "timestamp_ns", "value", *names])
        if not series:
            return
        rows = self._db.cursor(POINTS_SQL, list(series), request.start_ns, request.end_ns, prefetch=self._prefetch)
        async for row in rows:
            labels = series[row["series_id"]]
            if csv_out:
                yield _csv_row([metric, row["ts"], _number(row["value"]), *(labels.get(n, "") for n in names)])
            else:
                point = {"metric": metric, "labels": labels, "timestamp_ns": row["ts"], "value": row["value"]}
                yield orjson.dumps(point, option=orjson.OPT_APPEND_NEWLINE)

    async def _query_lines(self, tenant: str, request: export_pb2.ExportRequest, csv_out: bool) -> AsyncIterator[bytes]:
        answer = query_pb2.QueryRangeResponse.FromString(
            await self._engine.query_range(tenant, parse_range(request.query, self._limits))
        )
        names = sorted({name for s in answer.series for name in s.labels})
        if csv_out:
            yield _csv_row(["metric", "start_ns", "value", "count", *names])
        for s in answer.series:
            labels = dict(s.labels)
            for b in s.buckets:
                value = b.value if b.HasField("value") else None
                if csv_out:
                    row = [s.metric, b.start_ns, "" if value is None else _number(value), b.count]
                    yield _csv_row([*row, *(labels.get(n, "") for n in names)])
                else:
                    bucket = {"metric": s.metric, "labels": labels, "start_ns": b.start_ns, "value": value}
                    yield orjson.dumps(bucket | {"count": b.count}, option=orjson.OPT_APPEND_NEWLINE)


async def _chunks(lines: AsyncIterator[bytes]) -> AsyncIterator[export_pb2.ExportChunk]:
    """Lines gathered into chunks of about :data:`CHUNK_BYTES` (whole lines only)."""
    buffer = bytearray()  # each encoded line is copied in and dropped: orjson's small bytes carry a 4 KiB block
    rows = 0
    async for line in lines:
        buffer += line
        rows += 1
        if len(buffer) >= CHUNK_BYTES:
            yield export_pb2.ExportChunk(data=bytes(buffer), rows=rows)
            buffer.clear()
            rows = 0
    if rows:
        yield export_pb2.ExportChunk(data=bytes(buffer), rows=rows)


def _number(value: float) -> str:
    return repr(value) if math.isfinite(value) else ("NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf"))


def _csv_row(values: Iterable[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue().encode()


def add_to_server(servicer: ExportService, server: grpc.aio.Server) -> None:
    """Register ``servicer`` as ``tsmesh.v1.DataExportService``."""
    export_pb2_grpc.add_DataExportServiceServicer_to_server(servicer, server)
