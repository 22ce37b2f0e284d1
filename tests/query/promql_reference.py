"""The data and the local Prometheus of the PromQL reference test.

Data: gauges, counters with resets, a classic histogram and a series with gaps, 15 s apart over
four hours ending one hour before now (Prometheus keeps it: retention is set far out).
"""

from __future__ import annotations

import json
import random
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUCKETS = ("0.1", "0.5", "1", "5", "+Inf")


@dataclass(frozen=True)
class Dataset:
    """Series as (metric, labels, [(ts_ms, value)])."""

    series: list[tuple[str, dict[str, str], list[tuple[int, float]]]]
    start_ms: int
    end_ms: int


def make_dataset(seed: int = 13) -> Dataset:
    rng = random.Random(seed)
    end_s = (int(time.time()) // 3600 - 1) * 3600
    start_s = end_s - 4 * 3600
    steps = range(0, 4 * 3600, 15)
    series: list[tuple[str, dict[str, str], list[tuple[int, float]]]] = []
    for i, (host, dc) in enumerate([(h, d) for d in ("x", "y") for h in ("a", "b", "c")]):
        value = rng.uniform(10, 100)
        points = []
        for k in steps:
            value += rng.uniform(-3, 3)
            points.append(((start_s + k) * 1000 + i * 1000, round(value, 4)))
        series.append(("g", {"host": host, "dc": dc, "job": "node"}, points))
    for i, host in enumerate(("a", "b", "c", "d")):
        value = rng.uniform(0, 50)
        points = []
        for k in steps:
            value = 0.0 if rng.random() < 0.004 else value + rng.uniform(0, 5 + i)
            points.append(((start_s + k) * 1000 + 500 + i * 2000, round(value, 3)))
        series.append(("c_total", {"host": host, "dc": "xy"[i % 2], "job": "api"}, points))
    for dc in ("x", "y"):
        counts = [0.0] * len(BUCKETS)
        points_by = [[] for _ in BUCKETS]  # type: list[list[tuple[int, float]]]
        for k in steps:
            for _ in range(rng.randint(0, 6)):
                obs = rng.expovariate(1.5)
                for j, le in enumerate(BUCKETS):
                    if obs <= float(le):
                        counts[j] += 1
            for j in range(len(BUCKETS)):
                points_by[j].append(((start_s + k) * 1000, counts[j]))
        for j, le in enumerate(BUCKETS):
            series.append(("h_bucket", {"le": le, "dc": dc, "job": "api"}, points_by[j]))
    gap = [
        ((start_s + k) * 1000 + 7000, round(rng.uniform(0, 10), 3))
        for k in steps
        if not (3600 <= k < 4500 or 7200 <= k < 7320 or 10000 <= k < 11000)
    ]
    series.append(("gap", {"job": "batch"}, gap))
    return Dataset(series, start_s * 1000, end_s * 1000)


def openmetrics(data: Dataset) -> str:
    lines = []
    for metric, labels, points in data.series:
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for ts, value in points:
            lines.append(f"{metric}{{{text}}} {value!r} {ts / 1000:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A private Prometheus over a TSDB backfilled with ``promtool``."""

    def __init__(self, workdir: Path, data: Dataset) -> None:
        source = workdir / "data.om"
        source.write_text(openmetrics(data))
        tsdb = workdir / "tsdb"
        tsdb.mkdir()
        subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(tsdb)],
            check=True,
            capture_output=True,
            timeout=300,
        )
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\n")
        self.port = free_port()
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tsdb}",
                "--storage.tsdb.retention.time=100y",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--query.lookback-delta=5m",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        for _ in range(600):
            try:
                self.get("/-/ready")
                return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError("prometheus did not become ready")

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=30) as r:
            body: bytes = r.read()
            return body

    def query_range(self, query: str, start_ms: int, end_ms: int, step_ms: int) -> dict[str, Any]:
        if step_ms == 0:
            return self._post("/api/v1/query", {"query": query, "time": start_ms / 1000})
        return self._post(
            "/api/v1/query_range",
            {"query": query, "start": start_ms / 1000, "end": end_ms / 1000, "step": step_ms / 1000},
        )

    def _post(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        form = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=form)
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                answer: dict[str, Any] = json.loads(r.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read())
        return answer

    def version(self) -> str:
        info: dict[str, Any] = json.loads(self.get("/api/v1/status/buildinfo"))
        return str(info["data"]["version"])

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
