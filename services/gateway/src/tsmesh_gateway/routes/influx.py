"""InfluxDB v2 compatibility: ``POST /api/v2/write`` (line protocol) and ``GET /ping``.

Partial writes follow InfluxDB: good lines are stored, and the answer is 400 naming the first bad
line and why. The body is parsed in the worker's parse process into bounded requests (ADR 0222,
:meth:`PushSender.write_lines`); when one fails upstream (429, 503, ...) the error's
``details.accepted_points`` says how many points the earlier ones stored.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tsmesh_gateway.deps import Deps, endpoint
from tsmesh_gateway.http_errors import HttpError
from tsmesh_gateway.lineprotocol import PRECISION_NS
from tsmesh_gateway.push.sender import PushSender

CHUNK_POINTS = 5_000


def influx_routes(deps: Deps, sender: PushSender) -> list[Route]:
    """The InfluxDB-compatible routes bound to ``deps``, parsing in ``sender``'s parse process."""

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
        return await sender.write_lines(caller, body, PRECISION_NS[precision], bucket)

    async def ping(request: Request) -> Response:
        return Response(status_code=204, headers={"X-Influxdb-Version": "2.7-tsmesh"})

    return [
        Route("/api/v2/write", write, methods=["POST"]),
        Route("/ping", ping, methods=["GET", "HEAD"]),
    ]
