"""Parsing push bodies off the event loop: a worker's own small thread pool, so a large or hostile
body never holds up the other requests of the worker (the loop thread gets the interpreter back at
least every switch interval, 5 ms by default, while a parse runs; ADR 0222)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Offload:
    """Runs CPU-bound parsing in ``threads`` threads; at most that many parses at once per worker."""

    def __init__(self, threads: int = 1) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="push-parse")

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()``, computed in the pool."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    def close(self) -> None:
        """Stop the threads once the parses under way end."""
        self._pool.shutdown(wait=False, cancel_futures=True)
