"""The standard gRPC server skeleton of a tsmesh service.

``GrpcApp`` builds the server (health with per-service status, reflection, the interceptor stack);
``create_server`` binds it so tests can use port 0; ``serve`` adds the metrics endpoint, waits for
SIGTERM or SIGINT and shuts down gracefully: health NOT_SERVING, calls still served for the drain
period (clients watching health move away), then in-flight calls finish within the grace period,
registered closers run (pools, producers), exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tsmesh_common.audit import AuditReporter
from tsmesh_common.authn import Authenticator
from tsmesh_common.config import EXIT_CONFIG, CommonConfig
from tsmesh_common.errors import Unavailable
from tsmesh_common.grpc_tuning import GrpcTuning
from tsmesh_common.interceptors import ServerInterceptor
from tsmesh_common.metrics_http import MetricsServer

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
SERVER_OPTIONS: Sequence[tuple[str, Any]] = (
    ("grpc.so_reuseport", 0),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    # clients keep idle channels alive every 30 s: tolerate their pings without the receive-interval
    # knob, which (at 10 s, even at 1 s) held live Subscribe messages back by ~1 s at 1,000 streams
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.keepalive_permit_without_calls", 1),
)

Closer = Callable[[], Awaitable[None]]


class GrpcApp:
    """A gRPC server with health, reflection, interceptors and ordered shutdown hooks."""

    def __init__(
        self,
        authenticator: Authenticator | None,
        public_methods: frozenset[str] = frozenset(),
        max_deadline_seconds: float = 30.0,
        audit: AuditReporter | None = None,
        tuning: GrpcTuning | None = None,
    ) -> None:
        self.server = grpc.aio.server(
            interceptors=[ServerInterceptor(authenticator, public_methods, max_deadline_seconds, audit)],
            options=(*SERVER_OPTIONS, *(tuning or GrpcTuning()).server_options()),
        )
        self.health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names: list[str] = []
        self._reported: dict[str, bool] = {}
        self._closers: list[Closer] = []
        self._background: list[asyncio.Task[None]] = []
        self.serving = False
        self.stopping = asyncio.Event()
        self.failure: str | None = None

    def add_service(self, full_name: str, register: Callable[[grpc.aio.Server], None]) -> None:
        """Register a servicer (``register(server)``) under its full name for health and reflection."""
        register(self.server)
        self._service_names.append(full_name)

    async def report(self, name: str, serving: bool) -> None:
        """Set the health of ``name`` from background work (a producer connecting, a warm-up).

        Once reported, ``start`` never overwrites it: only later reports and ``stop`` change it.
        """
        self._reported[name] = serving
        if self.stopping.is_set():
            return
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(name, status)

    def on_shutdown(self, closer: Closer) -> None:
        """Run ``closer`` after the server has drained; closers run in reverse registration order."""
        self._closers.append(closer)

    def run_in_background(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """A task that lives as long as the server (consumers, listeners); cancelled at shutdown.

        If it ends on its own (an escaped exception, or a return) the process must not go on
        looking healthy without it: health turns NOT_SERVING and the server stops, exit non-zero.
        """
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(self._background_done)
        self._background.append(task)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self.stopping.is_set():
            return
        error = task.exception()
        self.failure = f"background task {task.get_name()} " + (
            f"failed: {type(error).__name__}: {error}" if error is not None else "ended unexpectedly"
        )
        log.error(self.failure, exc_info=error)
        self.stopping.set()

    async def start(self, host: str, port: int) -> int:
        reflection.enable_server_reflection(
            (*self._service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        try:
            bound = self.server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise Unavailable(f"gRPC port {port} on {host} is already in use (TSMESH_GRPC_PORT moves it)")
        await self.server.start()
        for name in ("", *self._service_names):
            if name not in self._reported:
                await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self.serving = True
        return bound

    async def stop(self, grace_seconds: float, drain_seconds: float = 0.0) -> None:
        """NOT_SERVING, keep serving ``drain_seconds`` while clients leave, then stop within the grace."""
        self.stopping.set()
        self.serving = False
        for name in ("", *self._service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        if drain_seconds > 0:
            await asyncio.sleep(drain_seconds)
        await self.server.stop(grace_seconds)
        for task in self._background:
            task.cancel()
        for task in self._background:
            try:
                await task
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("background task %s failed during shutdown", task.get_name())
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                log.exception("closer failed during shutdown")


async def create_server(app: GrpcApp, cfg: CommonConfig) -> int:
    """Bind and start ``app`` on the configured address; returns the bound port (tests pass 0)."""
    return await app.start(cfg.grpc_host, cfg.grpc_port)


async def serve(app: GrpcApp, cfg: CommonConfig) -> None:
    """Run until SIGTERM or SIGINT (or a background task dies), then shut down gracefully."""
    metrics = MetricsServer(cfg.grpc_host, cfg.metrics_port, lambda: app.serving)
    port = await create_server(app, cfg)
    metrics.start()
    log.info("serving", extra={"grpc_port": port, "metrics_port": metrics.port})
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stopping.set)
    await app.stopping.wait()
    log.info("shutting down", extra={"grace_seconds": cfg.grace_seconds, "drain_seconds": cfg.drain_seconds})
    failure = app.failure
    await app.stop(cfg.grace_seconds, 0.0 if failure is not None else cfg.drain_seconds)
    metrics.stop()
    log.info("stopped")
    if failure is not None:
        raise Unavailable(failure)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a service's async main on uvloop; a startup failure is one clear line and a non-zero exit."""
    import uvloop

    try:
        uvloop.run(main())
    except Unavailable as exc:
        print(f"stopped: {exc.message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG if "already in use" in exc.message else 1)
    except KeyboardInterrupt:
        pass
    sys.exit(0)
