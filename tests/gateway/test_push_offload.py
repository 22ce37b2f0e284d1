"""Push bodies are parsed in the worker's parse process; a parse process that dies answers the push
in flight 503 (retryable) and the next push gets a new process."""

from __future__ import annotations

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
