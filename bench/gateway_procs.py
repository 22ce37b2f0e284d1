"""Process helpers shared by the gateway benchmark's parts: the bench gateway (a Granian process
serving ``bench_gateway:create_bench_app``), /proc readings, live-path counters."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from throwaway import free_port

ROOT = Path(__file__).resolve().parent.parent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(c) for c in text)
    return found


class BenchGateway:
    """A Granian process serving :func:`create_bench_app` in front of the stack's services."""

    def __init__(self, stack: Any, workers: int, log: Path, **extra_env: str) -> None:
        self.port = free_port()
        self.ws_port = free_port()
        env = stack.service_env("gateway")
        env.update(**extra_env)
        env.update(
            TSMESH_HTTP_PORT=str(self.port),
            TSMESH_GATEWAY_WORKERS=str(workers),
            TSMESH_GATEWAY_WS_PORT=str(self.ws_port),
            TSMESH_LOG_LEVEL="WARNING",
            TSMESH_GATEWAY_LIMIT_QUERY="10000000:10000000",
            TSMESH_GATEWAY_LIMIT_QUERY_PER_ADDRESS="10000000:10000000",
            TSMESH_GATEWAY_LIMIT_AUTH_PER_ADDRESS="10000000:10000000",
            TSMESH_GATEWAY_WS_SEND_QUEUE_POINTS="100000",
            TSMESH_GATEWAY_WS_PING_SECONDS="300",
            TSMESH_GATEWAY_WS_IDLE_TIMEOUT_SECONDS="900",
            # every bench client is 127.0.0.1 with one token: the fairness budgets (ADR 0453) are set
            # out of the way here, explicitly, rather than weakened by default
            TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_TOKEN="1000000",
            TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_ADDRESS="1000000",
            TSMESH_GATEWAY_WS_HANDSHAKES_PER_ADDRESS="1000000:1000000",
            TSMESH_GATEWAY_CACHE_TTL_SECONDS="3600",
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT / "bench"), env.get("PYTHONPATH")) if p),
        )
        if workers > 1:
            env["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="tsmesh-bench-metrics-")
        code = (
            "from granian import Granian\n"
            "from granian.constants import Interfaces, Loops\n"
            f"Granian('bench_gateway:create_bench_app', factory=True, address='127.0.0.1', port={self.port},"
            f" interface=Interfaces.ASGI, workers={workers}, loop=Loops.uvloop, backlog=16384,"
            " log_access=False).serve()\n"
        )
        self._log = log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=self._log, stderr=self._log)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.ws_port}/v1/stream"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"bench gateway did not start (log: {log})")
            time.sleep(0.2)
        self.workers = children(self.proc.pid)
        while len(self.workers) < workers and time.monotonic() < deadline:  # /healthz answers from the first
            time.sleep(0.2)
            self.workers = children(self.proc.pid)

    def rss_kib(self) -> int:
        return sum(rss_kib(pid) for pid in self.workers)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def print_metrics(urls: dict[str, str]) -> None:
    """Live-path counters of each process, to tell where points wait or drop."""
    wanted = (
        "live_delay_seconds_sum",
        "live_delay_seconds_count",
        "live_batches_total",
        "live_publish",
        "subscribers_dropped",
        "ws_points_total",
        "ws_frames_total",
        "ws_upstream_subscriptions",
        "ws_closed",
    )
    for name, url in urls.items():
        try:
            text = httpx.get(url, timeout=5).text
        except httpx.HTTPError:
            continue
        lines = [line for line in text.splitlines() if not line.startswith("#") and any(w in line for w in wanted)]
        print(f"  {name}: " + "; ".join(lines), flush=True)
