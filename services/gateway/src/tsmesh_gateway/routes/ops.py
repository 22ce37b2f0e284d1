"""Operational routes on the public port: ``/healthz`` (alive), ``/readyz`` (in the load balancer),
``/openapi.json`` and Swagger UI at ``/docs``. Metrics are on the internal port
(:mod:`tsmesh_gateway.internal`).

Readiness (ADR 0454): a gateway is ready from the end of its start-up to the start of its shutdown.
Upstream health is reported, never a reason to leave the load balancer: every gateway shares the
same upstreams, so one unhealthy upstream would take every gateway out, and with them the routes
that do not need that upstream (writes and WebSockets while query is down). Requests to a down
upstream are answered 503 by its circuit breaker instead.

Swagger UI 5 (it reads OpenAPI 3.1) is vendored under ``static/swagger-ui`` (version and source in its
README) and served locally (no CDN), with no inline script so the Content-Security-Policy stays strict.
The docs stay on the public port: "Try it out" calls the API from the page's own origin. A
deployment that does not publish its API description turns them off (``TSMESH_GATEWAY_DOCS=false``,
the production overlay): ``/docs`` and ``/openapi.json`` then answer 404 like any unknown path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tsmesh_gateway.bodies import JSON_TYPE
from tsmesh_gateway.upstreams import Upstreams

DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tsmesh API</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>
"""
SWAGGER_UI_DIR = Path(__file__).resolve().parent.parent / "static" / "swagger-ui"
DOCS_INIT = 'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});\n'


class Readiness:
    """Whether this worker is between start-up and shutdown (set by the application's lifespan)."""

    def __init__(self) -> None:
        self.serving = False


def ops_routes(
    upstreams: Upstreams, spec: Callable[[], dict[str, object]], readiness: Readiness, *, with_docs: bool = True
) -> list[BaseRoute]:
    """Liveness, readiness and (``with_docs``) documentation routes."""
    spec_bytes: list[bytes] = []

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON_TYPE)

    async def readyz(request: Request) -> Response:
        upstream = await upstreams.readiness()
        degraded = [name for name, ok in upstream.items() if not ok]
        status = ("degraded" if degraded else "ready") if readiness.serving else "not ready"
        body = orjson.dumps({"status": status, "upstreams": upstream, "degraded": degraded})
        return Response(body, 200 if readiness.serving else 503, media_type=JSON_TYPE)

    async def openapi(request: Request) -> Response:
        if not spec_bytes:
            spec_bytes.append(orjson.dumps(spec()))
        return Response(spec_bytes[0], media_type=JSON_TYPE)

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    async def docs_init(request: Request) -> Response:
        return Response(DOCS_INIT, media_type="text/javascript")

    health: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    if not with_docs:
        return health
    return [
        *health,
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/init.js", docs_init, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger"),
    ]
