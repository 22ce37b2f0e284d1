"""InfluxDB v2 compatibility: ``POST /api/v2/write`` (line protocol) and ``GET /ping``.

Partial writes follow InfluxDB: good lines are stored, and the answer is 400 naming the first bad
line and why. Points go upstream in chunks, so a large body never becomes one huge gRPC message;
when a chunk fails upstream (429, 503, ...) the error's ``details.accepted_points`` says how many
points the earlier chunks stored.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tsmesh.v1 import ingest_pb2

from tsmesh_gateway.deps import Deps, endpoint
from tsmesh_gateway.http_errors import HttpError, to_http_error
from tsmesh_gateway.lineprotocol import PRECISION_NS, parse_body

CHUNK_POINTS = 5_000


def influx_routes(deps: Deps) -> list[Route]:
    """The InfluxDB-compatible routes bound to ``deps``."""
    ingest = deps.upstreams.ingest
    stub = deps.upstreams.ingest_stub

    @endpoint
    async def write(request: Request) -> Response:
        caller = await deps.authorize(request, "write", "write")
        bucket = request.query_params.get("bucket", "")
        if not bucket or len(bucket) > 256:
            raise HttpError(400, "INVALID_ARGUMENT", "bucket: is required", {"field": "bucket"}, caller.headers)
        precision = request.query_params.get("precision", "ns") or "ns"
        if precision not in PRECISION_NS:
            raise HttpError(
                400, "INVALID_ARGUMENT", "precision: must be ns, us, ms or s", {"field": "precision"}, caller.headers
            )
        body = await deps.body(request)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "INVALID_ARGUMENT", "body is not UTF-8", {"field": "body"}, caller.headers) from None
        parsed = parse_body(text, precision=precision, bucket=bucket)
        errors = list(parsed.errors)
        accepted = 0
        for start in range(0, len(parsed.points), CHUNK_POINTS):
            chunk = parsed.points[start : start + CHUNK_POINTS]
            try:
                answer = await ingest.unary(
                    stub.WriteBatch, ingest_pb2.WriteRequest(points=chunk), authorization=caller.authorization
                )
            except Exception as exc:  # noqa: BLE001 - mapped, with the count of what was already stored
                raise _partial_failure(exc, accepted, caller.headers) from None
            accepted += answer.accepted
            for rejected in answer.errors:
                index = start + int(rejected.index)
                if 0 <= index < len(parsed.line_of_point):
                    errors.append((parsed.line_of_point[index], f"{rejected.field}: {rejected.reason}"))
        if not errors and not parsed.points:
            raise HttpError(400, "INVALID_ARGUMENT", "writing requires points", {"field": "body"}, caller.headers)
        if not errors:
            return Response(status_code=204, headers=caller.headers)
        errors.sort()
        line, reason = errors[0]
        raise HttpError(
            400,
            "INVALID_ARGUMENT",
            f"partial write: line {line}: {reason}",
            {
                "field": "body",
                "line": line,
                "reason": reason,
                "bad_lines": len({n for n, _ in errors}),
                "accepted_points": accepted,
            },
            caller.headers,
        )

    async def ping(request: Request) -> Response:
        return Response(status_code=204, headers={"X-Influxdb-Version": "2.7-tsmesh"})

    return [
        Route("/api/v2/write", write, methods=["POST"]),
        Route("/ping", ping, methods=["GET", "HEAD"]),
    ]


def _partial_failure(exc: Exception, accepted: int, headers: dict[str, str]) -> HttpError:
    """A chunk failed upstream: its error, saying how many points earlier chunks stored (InfluxDB
    style ``partial write``), so the client knows a plain retry would write those again."""
    error = to_http_error(exc)
    error.details["accepted_points"] = accepted
    if accepted:
        error.message = f"partial write: {accepted} points accepted before failure: {error.message}"
    error.headers = {**headers, **error.headers}
    return error
