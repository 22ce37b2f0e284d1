"""Shared parts of the chaos scenarios: a load that counts what was sent and acknowledged, the
exactly-once check, and faults that never touch the machine's shared PostgreSQL, Redis or broker.

Every scenario ends with :func:`check_exactly_once` and prints its availability (acknowledged/sent).
Scenarios marked ``chaos_long`` run only under ``make chaos`` (``TSMESH_CHAOS_LONG=1``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from throwaway import TansuBroker

chaos_long = pytest.mark.skipif(
    os.environ.get("TSMESH_CHAOS_LONG") != "1", reason="long chaos scenario: run by `make chaos`"
)


@dataclass
class Load:
    """Points sent in batches by ``send`` until stopped; what was acknowledged is kept by key."""

    send: Callable[[int], Awaitable[list[tuple[int, float]]]]
    sent: int = 0
    acked: set[tuple[int, float]] = field(default_factory=set)
    acked_points: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                keys = await self.send(n)
            except Exception:
                keys = []
                await asyncio.sleep(0.05)
            else:
                self.acked.update(keys)
                self.acked_points += len(keys)
            n += 1
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task


def report(name: str, load: Load) -> None:
    """Print the scenario's availability (acknowledged points / sent points)."""
    share = load.acked_points / load.sent if load.sent else 0.0
    print(f"\nchaos {name}: availability {load.acked_points}/{load.sent} = {share:.3f}")


async def check_exactly_once(
    load: Load, stored: Callable[[], Awaitable[list[tuple[int, float]]]], timeout: float = 90.0
) -> None:
    """Every acknowledged point is stored, and none twice (waits for the writer to catch up)."""
    deadline = time.monotonic() + timeout
    rows = await stored()
    while not load.acked <= set(rows) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        rows = await stored()
    assert len(rows) == len(set(rows)), "a point was stored twice"
    missing = load.acked - set(rows)
    assert not missing, f"{len(missing)} acknowledged points were not stored"


class PausableBroker(TansuBroker):
    """A private bundled broker that can be made unreachable (SIGSTOP) without losing its log."""

    def pause(self) -> None:
        os.kill(self._proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._proc.pid, signal.SIGCONT)
