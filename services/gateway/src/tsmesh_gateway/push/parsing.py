"""What runs in a worker's parse process (ADR 0222): a push body in, ``WriteRequest`` bytes out.

Each function takes the body and the bounds, fills a :class:`~tsmesh_common.pointwire.RequestWriter`
and returns a :class:`Parsed` (the requests, the count, the translation's outcome), or a
:class:`Refused` for a body refused as a whole: errors come back as values, since the exception
types do not all survive pickling. The series caches live here, in the parse process, across the
bodies it parses (agents send the same series every interval).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tsmesh_common import otlp_view
from tsmesh_common.errors import InvalidArgument, TsmeshError
from tsmesh_common.otlp_metrics import translate as translate_otlp
from tsmesh_common.pointwire import IdentityCache, Outcome, RequestWriter, TooManyPoints
from tsmesh_gateway.http_errors import HttpError, to_http_error
from tsmesh_gateway.push import remote_write as rw
from tsmesh_gateway.push.lines import LineSeriesCache, LinesOutcome, translate_lines

OutcomeT = TypeVar("OutcomeT")
JSON = "application/json"


@dataclass(frozen=True)
class Bounds:
    """Points per request to ingest, points per push, bytes of a decompressed body."""

    chunk_points: int
    max_points: int
    max_decoded_bytes: int


@dataclass
class Parsed(Generic[OutcomeT]):
    """The serialized ``WriteRequest`` messages of a body, its point count and what was refused."""

    requests: list[bytes]
    points: int
    outcome: OutcomeT


@dataclass(frozen=True)
class Refused:
    """A body refused as a whole: the HTTP error to answer (headers are the caller's)."""

    status: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def error(self, headers: dict[str, str]) -> HttpError:
        return HttpError(self.status, self.code, self.message, dict(self.details), headers)


@dataclass
class _Caches:
    lines: LineSeriesCache = field(default_factory=LineSeriesCache)
    remote_write: IdentityCache = field(default_factory=IdentityCache)
    otlp: IdentityCache = field(default_factory=IdentityCache)


_CACHES = _Caches()  # this parse process's own; one parse runs at a time in it


def lines(body: bytes, scale: int, bucket: str, bounds: Bounds) -> Parsed[LinesOutcome] | Refused:
    """A line protocol body (timestamps in units of ``scale`` ns); ``bucket`` becomes a label."""
    return _guarded(
        lambda writer: translate_lines(body, scale=scale, bucket=bucket, writer=writer, cache=_CACHES.lines), bounds
    )


def remote_write(version: rw.Version, body: bytes, bounds: Bounds) -> Parsed[Outcome] | Refused:
    """A snappy remote_write body of ``version``."""

    def build(writer: RequestWriter) -> Outcome:
        return rw.translate(version, rw.inflate(body, bounds.max_decoded_bytes), writer, _CACHES.remote_write)

    return _guarded(build, bounds)


def otlp(body: bytes, media: str, bounds: Bounds) -> Parsed[Outcome] | Refused:
    """An OTLP ``ExportMetricsServiceRequest``, protobuf or JSON (``media``)."""
    return _guarded(lambda writer: translate_otlp(_export_request(body, media), writer, _CACHES.otlp), bounds)


def _guarded(build: Callable[[RequestWriter], OutcomeT], bounds: Bounds) -> Parsed[OutcomeT] | Refused:
    writer = RequestWriter(bounds.chunk_points, bounds.max_points)
    try:
        outcome = build(writer)
    except TooManyPoints as exc:
        details = {"field": "body", "limit": exc.limit}
        return Refused(413, "INVALID_ARGUMENT", f"{exc.message}: split the body", details)
    except (TsmeshError, HttpError) as exc:
        error = to_http_error(exc)
        return Refused(error.status, error.code, error.message, error.details)
    return Parsed(writer.requests(), writer.points, outcome)


def _export_request(body: bytes, media: str) -> Any:
    """The body as an :mod:`~tsmesh_common.otlp_view` request (JSON goes through the generated class)."""
    try:
        if media == JSON:
            document = orjson.loads(body)
            if not isinstance(document, dict):
                raise InvalidArgument("body", "not a valid ExportMetricsServiceRequest JSON: not an object")
            message = ExportMetricsServiceRequest()
            json_format.ParseDict(document, message, ignore_unknown_fields=True)
            return otlp_view.view_of(message)
        return otlp_view.parse(body)
    except (DecodeError, json_format.ParseError, orjson.JSONDecodeError, RecursionError) as exc:
        kind = "JSON" if media == JSON else "protobuf (truncated or corrupt)"
        raise InvalidArgument("body", f"not a valid ExportMetricsServiceRequest {kind}: {str(exc)[:200]}") from None
