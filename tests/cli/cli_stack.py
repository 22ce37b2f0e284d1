"""Running the real ``tsmesh`` script and counting what the stack stored."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from devstack import Stack

TSMESH = [sys.executable, "-m", "tsmesh_cli"]


@dataclass
class Cli:
    """Runs ``tsmesh`` in a subprocess with a private HOME/XDG and the stack's dev.env as its only credentials."""

    env: dict[str, str]
    cwd: Path

    def run(self, *args: str, stdin: bytes | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*TSMESH, *args],
            env=self.env,
            cwd=self.cwd,
            input=stdin.decode() if stdin is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*TSMESH, *args], env=self.env, cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )


def stored_count(stack: Stack, metric: str, start_ns: int, end_ns: int, want: int, wait_s: float = 120) -> int:
    """Points of ``metric`` in the range as the query API counts them, polled until ``want`` or ``wait_s``."""
    headers = {"Authorization": f"Bearer {stack.token}", "Cache-Control": "no-cache"}
    body = {
        "selector": {"metric": metric},
        "start_ns": start_ns,
        "end_ns": end_ns + 1,
        "step_ns": end_ns + 1 - start_ns,
        "aggregation": "count",
    }
    deadline = time.monotonic() + wait_s
    total = -1
    while time.monotonic() < deadline:
        answer = httpx.post(f"{stack.gateway_url}/v1/query/range", json=body, headers=headers, timeout=60).json()
        total = sum(int(b["count"]) for s in answer["series"] for b in s["buckets"])
        if total >= want:
            return total
        time.sleep(0.5)
    return total
