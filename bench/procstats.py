"""Resident memory of a stack's processes, read from /proc (shared by the soak and the chaos scenarios).

A service runs as a process group (Granian's workers, a supervisor's children): its RSS is the sum
over the group, the leader's pid being the group id (``scripts/stack.py`` starts each service in
a session of its own).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping


def _pgrp(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return int(fields[2])  # after "pid (comm)": state, ppid, pgrp


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def group_rss(pgid: int) -> int:
    """Bytes resident in every process of group ``pgid``."""
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    return sum(_rss_bytes(pid) for pid in pids if _pgrp(pid) == pgid)


def rss_by_service(children: Mapping[str, subprocess.Popen[bytes]]) -> dict[str, int]:
    """RSS (bytes) of each service of a stack, keyed by its name (``Stack.children``)."""
    return {name: group_rss(proc.pid) for name, proc in children.items()}
