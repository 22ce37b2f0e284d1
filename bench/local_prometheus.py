"""A private Prometheus over a TSDB backfilled with ``promtool`` (Debian's ``prometheus``): the
reference of the PromQL tests and the baseline of the PromQL benchmark (imported by both)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from throwaway import free_port


@dataclass(frozen=True)
class Dataset:
    """Series as (metric, labels, [(ts_ms, value)])."""

    series: list[tuple[str, dict[str, str], list[tuple[int, float]]]]
    start_ms: int
    end_ms: int


def openmetrics(data: Dataset) -> str:
    lines = []
    for metric, labels, points in data.series:
        text = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for ts, value in points:
            lines.append(f"{metric}{{{text}}} {value!r} {ts / 1000:.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


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
