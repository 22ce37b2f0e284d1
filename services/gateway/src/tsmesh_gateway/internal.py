"""The gateway's internal port (``TSMESH_METRICS_PORT``, 9100): ``/metrics``, ``/openapi.json``, Swagger
UI at ``/docs`` and ``/healthz``, kept off the public port (ADR 0454).

Served from a thread of Granian's main process (:func:`internal_server`), not from a worker: the
workers' metrics are read from the Prometheus multiprocess directory, so one scrape sees every
worker and a busy worker never delays it. Swagger UI's assets come from the ``swagger-ui-bundle``
package (no CDN), with no inline script so the Content-Security-Policy stays strict.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson
import swagger_ui_bundle
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from tsmesh_common.metrics_http import WsgiThreadServer
from tsmesh_gateway import tally
from tsmesh_gateway.bodies import JSON_TYPE
from tsmesh_gateway.config import GatewayConfig
from tsmesh_gateway.edge import SECURITY_HEADERS
from tsmesh_gateway.openapi import spec

DOCS_HTML = b"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tsmesh API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/init.js"></script></body></html>
"""
DOCS_INIT = b'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true});\n'
STATIC_PREFIX = "/docs/static/"
HEADERS = [(name.decode(), value.decode()) for name, value in SECURITY_HEADERS]


def metrics_bytes(multiprocess_dir: str | None) -> bytes:
    """The exposition of every worker (Prometheus multiprocess mode), or of this process (tests)."""
    tally.flush()
    if multiprocess_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class InternalPages:
    """The WSGI app of the internal port."""

    def __init__(self, multiprocess_dir: str | None) -> None:
        self._multiprocess_dir = multiprocess_dir
        self._spec: bytes | None = None
        assets = Path(swagger_ui_bundle.swagger_ui_path)
        self._assets = {p.name: p for p in assets.iterdir() if p.is_file() and not p.name.endswith(".map")}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", "text/plain", b"method not allowed\n")
        page = self._page(path)
        if page is None:
            return _answer(start_response, "404 Not Found", "text/plain", b"not found\n")
        return _answer(start_response, "200 OK", *page)

    def _page(self, path: str) -> tuple[str, bytes] | None:
        if path == "/metrics":
            return CONTENT_TYPE_LATEST, metrics_bytes(self._multiprocess_dir)
        if path == "/healthz":
            return JSON_TYPE, b'{"status":"ok"}'
        if path == "/openapi.json":
            if self._spec is None:
                self._spec = orjson.dumps(spec())
            return JSON_TYPE, self._spec
        if path == "/docs":
            return "text/html; charset=utf-8", DOCS_HTML
        if path == "/docs/init.js":
            return "text/javascript", DOCS_INIT
        if path.startswith(STATIC_PREFIX):
            asset = self._assets.get(path[len(STATIC_PREFIX) :])
            if asset is not None:
                return mimetypes.guess_type(asset.name)[0] or "application/octet-stream", asset.read_bytes()
        return None


def _answer(start_response: Callable[..., Any], status: str, content_type: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *HEADERS])
    return [body]


def internal_server(cfg: GatewayConfig, multiprocess_dir: str | None) -> WsgiThreadServer:
    """The internal port's server (not started), on the HTTP host and ``TSMESH_METRICS_PORT``."""
    return WsgiThreadServer(cfg.http_host, cfg.common.metrics_port, InternalPages(multiprocess_dir))
