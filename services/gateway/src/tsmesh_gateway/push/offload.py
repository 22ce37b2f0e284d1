"""Parsing push bodies in a worker's own parse process, so a large or hostile body never holds up
the other requests of the worker (ADR 0222).

A thread was not enough: the protobuf decode of a large body (upb, one C call) holds the
interpreter lock throughout, 45-250 ms for a 10 MiB OTLP body, and the event loop waits for it
whatever the switch interval. In a process the loop only pickles the body out and the requests
back. The process is started (``spawn``: the worker has threads) on the first push, so a worker
that never parses a push never pays for it; it ends with the worker (the executor's own exit
hook). If it dies (out of memory, killed), the push is answered 503 and the next one starts a
new process.

The parse process is daemonic. A Granian worker is itself a ``multiprocessing`` child, whose end
joins every non-daemonic child before the executor's own exit hook runs: a non-daemonic parse
process, waiting for work, was joined forever and the worker hung at exit (its gateway survived
SIGTERM). A daemonic one is terminated there; it has no children of its own. A worker killed
outright runs no exit code at all, so the parse process also watches its parent and ends when it
is gone (:func:`follow_parent`).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.context
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from tsmesh_common.errors import Unavailable

T = TypeVar("T")


def follow_parent(interval: float = 1.0) -> None:
    """In the parse process: end it once the worker that started it is gone (re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _DaemonProcess(multiprocessing.context.SpawnProcess):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = True


class _DaemonSpawn(multiprocessing.context.SpawnContext):
    """``spawn``, with daemonic processes (see the module docstring)."""

    Process = _DaemonProcess


class Offload:
    """Runs parses in ``processes`` parse processes; at most that many parses at once per worker.
    ``fn`` and its arguments cross a process boundary: a module-level function and picklable values."""

    def __init__(self, processes: int = 1) -> None:
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)``, computed in a parse process."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self._processes, mp_context=_DaemonSpawn(), initializer=follow_parent)
        pool = self._pool
        try:
            # Submitting may start the process (a fork and exec of this worker, tens of ms on a busy
            # machine): done in a thread, never on the event loop.
            future = await asyncio.to_thread(pool.submit, fn, *args)
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            if self._pool is pool:
                self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise Unavailable("the push parse process exited; retry") from None
