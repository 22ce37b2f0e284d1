"""Push bodies are parsed in the worker's parse process; a parse process that dies answers the push
in flight 503 (retryable) and the next push gets a new process."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

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


def start_parse_process_then_hang(pids: Any) -> None:
    """A worker that starts its parse process, reports its pid, then waits to be killed."""
    KEPT.append(Offload(1))
    pids.put(asyncio.run(KEPT[0].run(os.getpid)))
    time.sleep(600)


def test_the_parse_process_ends_when_its_worker_is_killed() -> None:
    context = multiprocessing.get_context("spawn")
    pids = context.Queue()
    worker = context.Process(target=start_parse_process_then_hang, args=(pids,))
    worker.start()
    parse_pid = pids.get(timeout=60)
    worker.kill()
    worker.join()
    deadline = time.monotonic() + 30  # the watch looks every second: generous for a busy machine
    while time.monotonic() < deadline and _running(parse_pid):
        time.sleep(0.1)
    alive = _running(parse_pid)
    if alive:
        os.kill(parse_pid, signal.SIGKILL)
    assert not alive


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
