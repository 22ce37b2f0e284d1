"""How many WebSockets one gateway worker may hold: its open-file limit, read where it is used (ADR 0452).

The configuration holds what an operator asked for (``TSMESH_GATEWAY_WS_MAX_CONNECTIONS``, or None
for "as many as the file limit allows"); the limit itself is OS state, read here when a worker
builds its stream endpoint and listener, after :func:`raise_open_file_limit` ran at start.
"""

from __future__ import annotations

import contextlib
import resource

from tsmesh_gateway.config import LISTEN_BACKLOG

# descriptors a worker keeps beyond its WebSockets: upstream channels, Redis, logs, listening sockets,
# HTTP clients, and a full backlog of handshakes still being answered
FD_HEADROOM = 1024 + LISTEN_BACKLOG
# the budget under an unlimited open-file limit
UNLIMITED_BUDGET = 1_000_000


def raise_open_file_limit() -> None:
    """Raise the soft open-file limit to the hard one (as Go's runtime does at start): a 1,024 soft
    limit under a higher hard one is a shell or systemd default, not a decision. The workers inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):  # a hard limit above the kernel's nr_open: keep it
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def socket_budget() -> int:
    """WebSockets one worker can hold: its open-file limit less :data:`FD_HEADROOM`, or less a quarter
    of it when the limit is small (a worker at its file limit could open no upstream connection)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return UNLIMITED_BUDGET
    return max(1, soft - min(FD_HEADROOM, soft // 4))


def max_sockets(configured: int | None) -> int:
    """The sockets this worker holds at most: ``configured`` (None: no setting), never above
    :func:`socket_budget`."""
    budget = socket_budget()
    return budget if configured is None else min(configured, budget)
