"""A gateway's graceful stop (ADR 0454), in two steps because Granian only drains HTTP requests.

On SIGTERM, Granian's main process (:class:`DrainingGranian`, its process-per-worker server) first
sends :data:`DRAIN_SIGNAL` to every worker: each one leaves readiness, stops its lean listener and
closes its WebSockets with 1001 (going away), so clients reconnect elsewhere instead of seeing a
dropped connection. After :data:`DRAIN_SECONDS` Granian stops the workers as usual: they accept
nothing new, finish in-flight requests and are killed after ``TSMESH_SHUTDOWN_GRACE_SECONDS``
(``workers_kill_timeout``). A second SIGTERM or SIGINT stops at once.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from typing import Any

from granian.server import MPServer

DRAIN_SIGNAL = signal.SIGUSR1
DRAIN_SECONDS = 1.0


class DrainingGranian(MPServer):
    """Granian, with the WebSocket drain step before the workers are stopped."""

    _draining = False

    def signal_handler_interrupt(self, *args: Any, **kwargs: Any) -> None:
        if self._draining:
            super().signal_handler_interrupt(*args, **kwargs)  # type: ignore[no-untyped-call]
            return
        self._draining = True
        for worker in multiprocessing.active_children():
            if worker.pid is not None:
                os.kill(worker.pid, DRAIN_SIGNAL)
        threading.Timer(DRAIN_SECONDS, super().signal_handler_interrupt).start()
