"""A private tsmesh stack for end-to-end tests: the whole mesh (``scripts/stack.py``) on free ports
with a throwaway database, never ``make run``'s; stopped and the database dropped afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from devstack import Stack
from stack_config import drop_database, private_config


@contextlib.contextmanager
def private_stack(folder: Path) -> Iterator[Stack]:
    """A started stack whose state lives in ``folder``."""
    cfg = private_config(folder)
    with open(os.devnull, "w") as quiet:
        running = Stack(cfg, out=quiet)
        try:
            running.start()
            yield running
        finally:
            running.stop()
            drop_database(cfg.database)
