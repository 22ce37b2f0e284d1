"""Operational routes: ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json`` and Swagger UI at ``/docs``.

Swagger UI 5 (it reads OpenAPI 3.1) is vendored under ``static/swagger-ui`` (version and source in its
README) and served locally (no CDN), with no inline script so the Content-Security-Policy stays strict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tsmesh_gateway import tally
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


def metrics_bytes(multiprocess_dir: str | None) -> bytes:
    """The exposition of this worker, or of every worker in Prometheus multiprocess mode (this
    worker's tallies flushed first, the others' are at most a second old)."""
    tally.flush()
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def ops_routes(
    upstreams: Upstreams, spec: Callable[[], dict[str, object]], multiprocess_dir: str | None
) -> list[BaseRoute]:
    """Health, readiness, metrics and documentation routes."""
    spec_bytes: list[bytes] = []

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type=JSON_TYPE)

    async def readyz(request: Request) -> Response:
        upstream = await upstreams.readiness()
        ready = all(upstream.values())
        body = orjson.dumps({"status": "ready" if ready else "not ready", "upstreams": upstream})
        return Response(body, 200 if ready else 503, media_type=JSON_TYPE)

    async def metrics(request: Request) -> Response:
        return Response(metrics_bytes(multiprocess_dir), media_type=CONTENT_TYPE_LATEST)

    async def openapi(request: Request) -> Response:
        if not spec_bytes:
            spec_bytes.append(orjson.dumps(spec()))
        return Response(spec_bytes[0], media_type=JSON_TYPE)

    async def docs(request: Request) -> Response:
        return HTMLResponse(DOCS_HTML)

    async def docs_init(request: Request) -> Response:
        return Response(DOCS_INIT, media_type="text/javascript")

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/init.js", docs_init, methods=["GET"]),
        Mount("/docs/static", StaticFiles(directory=SWAGGER_UI_DIR), name="swagger"),
    ]
