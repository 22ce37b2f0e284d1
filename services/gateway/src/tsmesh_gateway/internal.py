"""The gateway's internal port (``TSMESH_METRICS_PORT``, 9100): ``/metrics`` and ``/healthz``, kept
off the public port (ADR 0454).

Served from a thread of Granian's main process (:func:`internal_server`), not from a worker: the
workers' metrics are read from the Prometheus multiprocess directory, so one scrape sees every
worker and a busy worker never delays it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from tsmesh_common.metrics_http import WsgiThreadServer
from tsmesh_gateway import tally
from tsmesh_gateway.bodies import JSON_TYPE
from tsmesh_gateway.config import GatewayConfig
from tsmesh_gateway.edge import SECURITY_HEADERS

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

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            return _answer(start_response, "405 Method Not Allowed", "text/plain", b"method not allowed\n")
        if path == "/metrics":
            return _answer(start_response, "200 OK", CONTENT_TYPE_LATEST, metrics_bytes(self._multiprocess_dir))
        if path == "/healthz":
            return _answer(start_response, "200 OK", JSON_TYPE, b'{"status":"ok"}')
        return _answer(start_response, "404 Not Found", "text/plain", b"not found\n")


def _answer(start_response: Callable[..., Any], status: str, content_type: str, body: bytes) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body))), *HEADERS])
    return [body]


def internal_server(cfg: GatewayConfig, multiprocess_dir: str | None) -> WsgiThreadServer:
    """The internal port's server (not started), on the HTTP host and ``TSMESH_METRICS_PORT``."""
    return WsgiThreadServer(cfg.http_host, cfg.common.metrics_port, InternalPages(multiprocess_dir))
