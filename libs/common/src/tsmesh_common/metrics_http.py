"""The Prometheus ``/metrics`` and ``/healthz`` HTTP endpoint of a gRPC service, on a
:class:`WsgiThreadServer` (the gateway serves its internal port on one too).

Served from a daemon thread so a busy event loop never delays a scrape or a probe.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app

from tsmesh_common.errors import Unavailable


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WsgiThreadServer:
    """A WSGI app served from a daemon thread on ``host:port`` (port 0: any free port)."""

    def __init__(self, host: str, port: int, app: WsgiApp) -> None:
        try:
            self._server = make_server(host, port, app, _ThreadingServer, handler_class=_QuietHandler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Unavailable(f"metrics port {port} is already in use (TSMESH_METRICS_PORT moves it)") from exc
            raise
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class MetricsServer(WsgiThreadServer):
    """Serves metrics and process health; ``healthy`` is polled on each /healthz request."""

    def __init__(
        self, host: str, port: int, healthy: Callable[[], bool], registry: CollectorRegistry = REGISTRY
    ) -> None:
        self._metrics_app = make_wsgi_app(registry)
        self._healthy = healthy
        super().__init__(host, port, self._app)

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            result: Iterable[bytes] = self._metrics_app(environ, start_response)
            return result
        if path == "/healthz":
            ok = self._healthy()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"shutting down\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
