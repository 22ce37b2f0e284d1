"""The push routes: Prometheus remote_write ``POST /api/v1/write``, OTLP/HTTP ``POST /otlp/v1/metrics``
and InfluxDB v1 ``POST /write`` (ADRs 0220-0222).

Each reads its body under the body caps (413), parses it in the worker's parse process into
``WriteRequest`` bytes of at most ``chunk_points`` points (at most ``max_points`` in all: 413), and
writes them to ingest. Bad data is a 4xx naming the fault; ingest overload or unavailability is the
429/503 of :mod:`http_errors`, which remote_write and OTLP clients retry.
"""

from __future__ import annotations

import base64
import binascii

from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsmesh_common.errors import Unauthenticated
from tsmesh_gateway.bodies import too_large
from tsmesh_gateway.deps import Deps, endpoint
from tsmesh_gateway.http_errors import HttpError
from tsmesh_gateway.lineprotocol import PRECISION_NS
from tsmesh_gateway.push import parsing, remote_write
from tsmesh_gateway.push.sender import PushSender

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# InfluxDB 1.x precisions: its own h and m besides v2's.
V1_PRECISION_NS = {**PRECISION_NS, "m": 60_000_000_000, "h": 3_600_000_000_000}


def push_routes(deps: Deps, sender: PushSender) -> list[Route]:
    """The push routes bound to ``deps``, parsing in ``sender``'s parse process."""
    return PushRoutes(deps, sender).routes()


class PushRoutes:
    """The push endpoints of one worker."""

    def __init__(self, deps: Deps, sender: PushSender) -> None:
        self._deps = deps
        self._sender = sender

    def routes(self) -> list[Route]:
        return [
            Route("/api/v1/write", endpoint(self.remote_write), methods=["POST"]),
            Route("/otlp/v1/metrics", endpoint(self.otlp_metrics), methods=["POST"]),
            Route("/write", endpoint(self.influx_v1_write), methods=["POST"]),
        ]

    async def remote_write(self, request: Request) -> Response:
        """Prometheus remote_write 1.0 or 2.0 (by Content-Type): 204, or 400 naming refused samples."""
        caller = await self._deps.authorize(request, "write", "write")
        version = remote_write.negotiate(request.headers.get("content-type"))
        encoding = request.headers.get("content-encoding", "snappy").strip().lower()
        if encoding != "snappy":
            raise HttpError(
                415,
                "INVALID_ARGUMENT",
                "Content-Encoding must be snappy",
                {"field": "content-encoding"},
                caller.headers,
            )
        body = await self._raw_body(request)
        sender = self._sender
        parsed = await sender.parse(caller.headers, parsing.remote_write, version, body, sender.bounds)
        outcome = parsed.outcome
        sent = await sender.send(caller, parsed.requests)
        headers = dict(caller.headers)
        if version is remote_write.Version.V2:
            headers["X-Prometheus-Remote-Write-Samples-Written"] = str(sent.accepted)
            headers["X-Prometheus-Remote-Write-Histograms-Written"] = "0"
            headers["X-Prometheus-Remote-Write-Exemplars-Written"] = "0"
        reasons = outcome.messages + [f"sample {i}: {f}: {r}" for i, f, r in sent.refused[:10]]
        if reasons:
            refused = outcome.rejected + len(sent.refused)
            raise HttpError(
                400,
                "INVALID_ARGUMENT",
                f"{refused} samples refused ({sent.accepted} stored): {reasons[0]}",
                {"field": "timeseries", "accepted_points": sent.accepted, "refused": refused, "reasons": reasons},
                headers,
            )
        return Response(status_code=204, headers=headers)

    async def otlp_metrics(self, request: Request) -> Response:
        """OTLP/HTTP metrics, protobuf or JSON (optionally gzip): 200 with the export response,
        whose ``partial_success`` counts the refused data points and says why."""
        caller = await self._deps.authorize(request, "write", "write")
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media not in (PROTOBUF, JSON):
            raise HttpError(
                415,
                "INVALID_ARGUMENT",
                f"Content-Type must be {PROTOBUF} or {JSON}",
                {"field": "content-type"},
                caller.headers,
            )
        body = await self._deps.body(request)
        sender = self._sender
        parsed = await sender.parse(caller.headers, parsing.otlp, body, media, sender.bounds)
        outcome = parsed.outcome
        sent = await sender.send(caller, parsed.requests)
        answer = ExportMetricsServiceResponse()
        messages = outcome.messages + [f"point {i}: {f}: {r}" for i, f, r in sent.refused[:10]]
        if messages:
            answer.partial_success.rejected_data_points = outcome.rejected + len(sent.refused)
            answer.partial_success.error_message = "; ".join(messages)
        if media == JSON:
            content = json_format.MessageToJson(answer, indent=None).encode()
        else:
            content = answer.SerializeToString()
        return Response(content, 200, headers=caller.headers, media_type=media)

    async def influx_v1_write(self, request: Request) -> Response:
        """InfluxDB 1.x ``/write?db=&rp=&precision=``: ``db`` (``db/rp`` for another retention
        policy than ``autogen``) becomes the ``bucket`` label, as InfluxDB 2's v1 mapping names it.
        InfluxDB 1.x credentials carry the token as the password (Basic auth or ``p=``), as
        InfluxDB 2's v1 API takes them."""
        header = _v1_authorization(request.headers.get("authorization"), request.query_params.get("p"))
        deps = self._deps
        caller = await deps.authorize_header(header, deps.client_address(request.scope), "write", "write")
        params = request.query_params
        db = params.get("db", "")
        if not db or len(db) > 200:
            raise HttpError(400, "INVALID_ARGUMENT", "db: is required", {"field": "db"}, caller.headers)
        rp = params.get("rp", "")
        bucket = db if rp in ("", "autogen") else f"{db}/{rp[:55]}"
        precision = params.get("precision", "ns") or "ns"
        if precision not in V1_PRECISION_NS:
            raise HttpError(
                400,
                "INVALID_ARGUMENT",
                "precision: must be ns, n, u, us, ms, s, m or h",
                {"field": "precision"},
                caller.headers,
            )
        body = await self._deps.body(request)
        return await self._sender.write_lines(caller, body, V1_PRECISION_NS[precision], bucket)

    async def _raw_body(self, request: Request) -> bytes:
        """The body as sent (remote_write's snappy is undone by the parser, under its own cap)."""
        cfg = self._deps.cfg
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cfg.max_body_bytes:
            raise too_large(cfg.max_body_bytes)
        chunks = await self._deps.watchdog.read(request.receive, cfg.body_timeout_seconds, cfg.max_body_bytes)
        return b"".join(chunks)


def _v1_authorization(header: str | None, password: str | None) -> str | None:
    """``Authorization`` as the routes read it, from InfluxDB 1.x credentials: Basic auth's
    password, or the ``p`` query parameter when no header is sent, is the token."""
    if header is not None and header[:6].lower() == "basic ":
        try:
            _, _, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthenticated("malformed basic authorization header") from None
        return f"Token {password}"
    if header is None and password:
        return f"Token {password}"
    return header
