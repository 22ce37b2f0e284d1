"""Operational routes on the public port: ``/healthz`` (alive) and ``/readyz`` (in the load
balancer). Metrics and docs are on the internal port (:mod:`tsmesh_gateway.internal`).

Readiness (ADR 0454): a gateway is ready from the end of its start-up to the start of its shutdown.
Upstream health is reported, never a reason to leave the load balancer: every gateway shares the
same upstreams, so one unhealthy upstream would take every gateway out, and with them the routes
that do not need that upstream (writes and WebSockets while query is down). Requests to a down
upstream are answered 503 by its circuit breaker instead.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tsmesh_gateway.bodies import JSON_TYPE
from tsmesh_gateway.upstreams import Upstreams


class Readiness:
    """Whether this worker is between start-up and shutdown (set by the application's lifespan)."""

    def __init__(self) -> None:
        self.serving = False


def ops_routes(upstreams: Upstreams, readiness: Readiness) -> list[BaseRoute]:
    """Liveness and readiness routes."""

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON_TYPE)

    async def readyz(request: Request) -> Response:
        upstream = await upstreams.readiness()
        degraded = [name for name, ok in upstream.items() if not ok]
        status = ("degraded" if degraded else "ready") if readiness.serving else "not ready"
        body = orjson.dumps({"status": status, "upstreams": upstream, "degraded": degraded})
        return Response(body, 200 if readiness.serving else 503, media_type=JSON_TYPE)

    return [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
