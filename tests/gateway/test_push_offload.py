"""Push bodies are parsed in the worker's parse process; a parse process that dies answers the push
in flight 503 (retryable) and the next push gets a new process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal

import pytest

from tsmesh_common.errors import Unavailable
from tsmesh_gateway.push.offload import Offload


def die() -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


async def test_parses_run_in_another_process_and_one_that_dies_is_replaced() -> None:
    offload = Offload(1)
    first = await offload.run(os.getpid)
    assert first != os.getpid()
    assert await offload.run(os.getpid) == first  # the same process keeps its caches
    with pytest.raises(Unavailable, match="parse process exited"):
        await offload.run(die)
    second = await offload.run(os.getpid)
    assert second not in (first, os.getpid())


KEPT: list[Offload] = []


def parse_once_then_exit() -> None:
    """A worker process (as Granian's are) that parses a push, then ends with its offload still
    referenced (as a gateway's app holds it)."""
    KEPT.append(Offload(1))
    asyncio.run(KEPT[0].run(os.getpid))


def test_a_worker_that_parsed_a_push_still_exits() -> None:
    """A non-daemonic parse process was joined by the ending worker while it waited for work: the
    worker hung at exit (its gateway survived SIGTERM)."""
    worker = multiprocessing.get_context("spawn").Process(target=parse_once_then_exit)
    worker.start()
    worker.join(30)
    hung = worker.is_alive()
    if hung:
        worker.kill()
        worker.join()
    assert not hung
    assert worker.exitcode == 0
