"""The local tsmesh stack behind ``make run``.

Checks that PostgreSQL and Redis answer and that every port is free, prepares the database (roles,
schemas, each service's migrations as its own role), starts the bundled Kafka-protocol broker unless
``TSMESH_KAFKA_BOOTSTRAP`` names one, creates the topics, starts the four services, waits until each
answers its health check, provisions a ``demo`` tenant with an API token into ``.tsmesh/dev.env``
and prints where everything is. A step that fails stops ``make run`` with one line naming it.
A service that exits later is restarted with backoff (its exit code and log path printed), as
Kubernetes would. Ctrl-C or SIGTERM stops the producers first, waits (at most 10 s) until the writer
has stored what the bundled broker holds, then stops the rest and the broker, and exits 0.

This module is the command line; the stack itself lives in ``stack`` (the :class:`Stack`),
``stack_config``, ``stack_checks``, ``stack_demo`` and ``stack_procs``. Tests and benchmarks import
:class:`Stack` and :class:`StackConfig` from here to run a private stack on free ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType

from stack import Stack
from stack_config import DEMO_EMAIL, DEMO_TENANT, GRPC_SERVICES, ROOT, SERVICES, Port, StackConfig, redact
from stack_procs import StackError, http_status, port_in_use, run_command, run_commands
from stack_supervise import Backoff

__all__ = [
    "DEMO_EMAIL",
    "DEMO_TENANT",
    "GRPC_SERVICES",
    "ROOT",
    "SERVICES",
    "Port",
    "Stack",
    "StackConfig",
    "StackError",
    "http_status",
    "main",
    "port_in_use",
    "redact",
    "run_command",
    "run_commands",
]


class _Interrupted(Exception):
    pass


def _take_terminal() -> Callable[[], None]:
    """Become the terminal's foreground process group, so Ctrl-C reaches only this process.

    Under ``make run`` the interrupt would otherwise also hit make, which then exits 130 even
    though the stack stopped cleanly. Returns a function that hands the terminal back.
    """
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.getpgrp() == os.getpid():
            return lambda: None
        previous = os.tcgetpgrp(fd)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.setpgid(0, 0)
        os.tcsetpgrp(fd, os.getpgrp())
    except (OSError, ValueError):
        return lambda: None

    def give_back() -> None:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, previous)

    return give_back


def supervise(stack: Stack, backoff: Backoff, *, until: Callable[[], bool] = lambda: False) -> None:
    """Restart every child that exits, after its backoff, until interrupted (or ``until()``)."""
    due: dict[str, float] = {}
    while not until():
        dead = stack.dead_child()
        if dead is not None and dead[0] not in due:
            name, rc = dead
            delay = backoff.next_delay(name)
            print(
                f"make run: {name} exited with code {rc} (log: {stack.log_path(name)}); restarting in {delay:.0f}s",
                file=sys.stderr,
                flush=True,
            )
            due[name] = time.monotonic() + delay
        for name, at in list(due.items()):
            if time.monotonic() >= at:
                del due[name]
                stack.restart(name)
                backoff.started(name)
        time.sleep(0.25)


def main() -> int:
    """``make run``: start, print where everything is, run until Ctrl-C/SIGTERM, then stop everything."""
    from tsmesh_common.config import ConfigError

    try:
        cfg = StackConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"make run: configuration error: {exc}", file=sys.stderr)
        return 2
    stack = Stack(cfg)
    give_back_terminal = _take_terminal()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stack.stopping:
            raise _Interrupted

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    try:
        stack.start()
        print(stack.describe(), flush=True)
        supervise(stack, Backoff())
    except _Interrupted:
        print("stopping tsmesh ...", flush=True)
    except StackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        code = 1
    finally:
        stack.stop()
        give_back_terminal()
    return code


if __name__ == "__main__":
    sys.exit(main())
