"""Parsing push bodies off the event loop: a worker's own small thread pool, so a large or hostile
body never holds up the other requests of the worker (ADR 0222).

While a parse runs, the loop thread waits for the interpreter lock each time it gives it up (every
``select`` of every loop iteration), up to the switch interval each time: at CPython's default 5 ms
one ``/healthz`` took 80-190 ms during a 10 MiB parse on a busy box. The interval is lowered to
:data:`SWITCH_INTERVAL` for the worker process when the pool is made (it matters only while two
threads want the lock, that is, while a parse runs)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
SWITCH_INTERVAL = 0.0005


class Offload:
    """Runs CPU-bound parsing in ``threads`` threads; at most that many parses at once per worker."""

    def __init__(self, threads: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="push-parse")
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()``, computed in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
