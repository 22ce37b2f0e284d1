"""Shared benchmark harness: latency recording, the bare gRPC echo baseline, and the report.

Every benchmark in ``bench/`` measures its own figures and, in the same run, a baseline that
bounds them (for gRPC services: a bare ``grpc.aio`` unary echo on loopback, no interceptors,
no protobuf). The report prints each figure beside its baseline and the ratio, so a result
reads the same on any machine.

Usage::

    from harness import LatencyRecorder, Report, echo_baseline

    base = await echo_baseline(duration_s=5, concurrency=32)
    report = Report("ingest")
    report.add("WriteBatch calls/s", rate, "calls/s", "bare echo", base.calls_per_s, ">= 80% of baseline")
    report.print()
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
import types
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

ECHO_SERVICE = "tsmesh.bench.Echo"
ECHO_METHOD = f"/{ECHO_SERVICE}/Echo"


class LatencyRecorder:
    """Collects call durations (seconds) in a flat float array; percentiles are computed on demand.

    ``record`` is one C-level append, so it costs far less than the calls it measures.
    """

    def __init__(self) -> None:
        self._samples = array("d")

    def record(self, seconds: float) -> None:
        """Add one duration in seconds."""
        self._samples.append(seconds)

    def extend(self, other: LatencyRecorder) -> None:
        """Merge the samples of another recorder (e.g. one per worker task)."""
        self._samples.extend(other._samples)

    def tail(self, start: int) -> LatencyRecorder:
        """The samples recorded after the first ``start`` (e.g. after a warm-up)."""
        out = LatencyRecorder()
        out._samples = self._samples[start:]
        return out

    def __len__(self) -> int:
        return len(self._samples)

    def summary(self) -> dict[str, float]:
        """``p50``, ``p99``, ``p999``, ``mean``, ``max`` in milliseconds, and ``count``."""
        ordered = sorted(self._samples)
        count = len(ordered)
        if count == 0:
            return {"count": 0, "p50": 0.0, "p99": 0.0, "p999": 0.0, "mean": 0.0, "max": 0.0}
        return {
            "count": count,
            "p50": _percentile(ordered, 0.50) * 1000.0,
            "p99": _percentile(ordered, 0.99) * 1000.0,
            "p999": _percentile(ordered, 0.999) * 1000.0,
            "mean": math.fsum(ordered) / count * 1000.0,
            "max": ordered[-1] * 1000.0,
        }


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class EchoResult:
    """The bare gRPC baseline: unary calls per second and their latency summary (ms)."""

    calls_per_s: float
    latency: dict[str, float]


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def start_echo_server() -> tuple[grpc.aio.Server, int]:
    """A bare grpc.aio server with one generic unary echo handler on raw bytes, on 127.0.0.1:0."""
    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(ECHO_SERVICE, {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def drive(
    call: Callable[[], Awaitable[object]], duration_s: float, concurrency: int
) -> tuple[float, LatencyRecorder]:
    """Run ``call`` from ``concurrency`` concurrent loops for ``duration_s``; returns (calls/s, latencies)."""
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    recorders = [LatencyRecorder() for _ in range(concurrency)]
    clock = time.perf_counter
    deadline = clock() + duration_s

    async def worker(rec: LatencyRecorder) -> None:
        while True:
            began = clock()
            if began >= deadline:
                return
            await call()
            rec.record(clock() - began)

    started = clock()
    await asyncio.gather(*(worker(r) for r in recorders))
    elapsed = clock() - started
    merged = LatencyRecorder()
    for rec in recorders:
        merged.extend(rec)
    return (len(merged) / elapsed if elapsed > 0 else 0.0), merged


async def echo_baseline(duration_s: float, concurrency: int, payload: bytes = b"x" * 64) -> EchoResult:
    """Measure a bare grpc.aio unary echo on loopback with ``concurrency`` concurrent callers."""
    server, port = await start_echo_server()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            echo = channel.unary_unary(ECHO_METHOD, None, None)
            await echo(payload, timeout=10)  # warm the connection before measuring

            async def call() -> object:
                return await echo(payload, timeout=10)

            rate, latencies = await drive(call, duration_s, concurrency)
    finally:
        await server.stop(None)
    return EchoResult(calls_per_s=rate, latency=latencies.summary())


@dataclass(frozen=True)
class Row:
    """One figure of a report, optionally beside its baseline and a target."""

    name: str
    value: float
    unit: str
    baseline_name: str | None = None
    baseline_value: float | None = None
    target: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


@dataclass
class Report:
    """Figures of one benchmark run, printed as an aligned table or Markdown, each with its ratio."""

    title: str
    rows: list[Row] = field(default_factory=list)

    def add(
        self,
        name: str,
        value: float,
        unit: str,
        baseline_name: str | None = None,
        baseline_value: float | None = None,
        target: str | None = None,
    ) -> Row:
        """Add a figure; ``target`` is a human statement such as ``">= 80% of baseline"``."""
        row = Row(
            name, float(value), unit, baseline_name, None if baseline_value is None else float(baseline_value), target
        )
        self.rows.append(row)
        return row

    HEADER = ("figure", "value", "unit", "baseline", "baseline value", "ratio", "target")

    def _cells(self) -> list[tuple[str, ...]]:
        out: list[tuple[str, ...]] = []
        for r in self.rows:
            ratio = r.ratio
            out.append(
                (
                    r.name,
                    _fmt(r.value),
                    r.unit,
                    r.baseline_name or "",
                    _fmt(r.baseline_value),
                    "" if ratio is None else f"{ratio:.2f}x ({ratio * 100:.0f}%)",
                    r.target or "",
                )
            )
        return out

    def text(self) -> str:
        """The aligned plain-text table."""
        rows = [self.HEADER, *self._cells()]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.HEADER))]
        numeric = {1, 4, 5}
        lines = [f"== {self.title} =="]
        for index, row in enumerate(rows):
            cells = [
                c.rjust(w) if i in numeric and index else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  ".join(cells).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def print(self) -> None:
        """Print the aligned table to stdout."""
        print(self.text(), flush=True)

    def markdown(self) -> str:
        """The same table in Markdown, ready for ``docs/benchmarks.md``."""
        lines = [f"### {self.title}", "", "| " + " | ".join(self.HEADER) + " |", "|" + "---|" * len(self.HEADER)]
        for cells in self._cells():
            escaped = (c.replace("|", "\\|") for c in cells)
            lines.append("| " + " | ".join(escaped) + " |")
        return "\n".join(lines) + "\n"


async def _main() -> None:
    result = await echo_baseline(duration_s=3.0, concurrency=32)
    report = Report("bare grpc.aio unary echo (loopback)")
    report.add("calls/s", result.calls_per_s, "calls/s")
    for key in ("p50", "p99", "p999"):
        report.add(f"latency {key}", result.latency[key], "ms")
    report.print()


if __name__ == "__main__":
    asyncio.run(_main())


def module_at(rev: str, path: str, name: str) -> types.ModuleType:
    """The module at ``path`` (relative to the repository) as of git revision ``rev``, importable as
    ``name`` beside this checkout's own: the A side of an in-process A/B."""
    root = Path(__file__).resolve().parent.parent
    source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, check=True, capture_output=True, text=True)
    module = types.ModuleType(name)
    module.__file__ = f"{rev}:{path}"
    sys.modules[name] = module  # dataclasses resolve their module's annotations through sys.modules
    exec(compile(source.stdout, module.__file__, "exec"), module.__dict__)
    return module
