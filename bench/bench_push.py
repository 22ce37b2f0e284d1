"""Push protocols end to end, side by side in one run on a private stack (`python bench/bench_push.py`):
gRPC WriteBatch straight to ingest, then InfluxDB line protocol (v2 and v1 routes), Prometheus
remote_write 1.0 and OTLP/HTTP through the gateway. Each protocol writes the same number of points
(distinct metrics) in 5,000-point requests from ``--clients`` concurrent senders; the rate is the
points committed by the writer per second of wall time, and the CPU seconds per million points of
the gateway and ingest processes are read from /proc."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import cramjam
import grpc
import httpx
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2 as otlp
from prometheus import remote_pb2, types_pb2
from tsmesh.v1 import common_pb2, ingest_pb2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from devstack import DEMO_EMAIL, DEMO_TENANT, Stack  # noqa: E402
from stack_config import drop_database, private_config  # noqa: E402

BATCH = 5_000
SERIES = 1_000


def committed(stack: Stack) -> float:
    text = urllib.request.urlopen(stack.metrics_url("ingest_writer"), timeout=5).read().decode()
    return sum(float(n) for n in re.findall(r"^tsmesh_ingest_writer_batch_rows_sum ([0-9.e+]+)$", text, re.M))


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants (a gateway's Granian workers and their
    parse processes)."""
    total = 0.0
    for task in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{task}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        children = parents.get(pending.pop(), [])
        found += children
        pending += children
    return found


def samples(tag: str, batch: int, base_ms: int) -> list[tuple[str, int, int, float]]:
    """(metric, series number, timestamp ms, value) of one request."""
    return [(f"bench_{tag}", i % SERIES, base_ms + batch * 10 + i // SERIES, float(i)) for i in range(BATCH)]


def grpc_body(tag: str, batch: int, base_ms: int) -> bytes:
    points = [
        common_pb2.Point(metric=m, labels={"host": f"h{s}", "dc": "eu"}, timestamp_ns=t * 1_000_000, value=v)
        for m, s, t, v in samples(tag, batch, base_ms)
    ]
    return ingest_pb2.WriteRequest(points=points).SerializeToString()


def line_body(tag: str, batch: int, base_ms: int) -> bytes:
    return "".join(f"{m},dc=eu,host=h{s} value={v} {t}\n" for m, s, t, v in samples(tag, batch, base_ms)).encode()


def remote_write_body(tag: str, batch: int, base_ms: int) -> bytes:
    by_series: dict[tuple[str, int], list[types_pb2.Sample]] = {}
    for m, s, t, v in samples(tag, batch, base_ms):
        by_series.setdefault((m, s), []).append(types_pb2.Sample(value=v, timestamp=t))
    request = remote_pb2.WriteRequest(
        timeseries=[
            types_pb2.TimeSeries(
                labels=[
                    types_pb2.Label(name="__name__", value=m),
                    types_pb2.Label(name="dc", value="eu"),
                    types_pb2.Label(name="host", value=f"h{s}"),
                ],
                samples=found,
            )
            for (m, s), found in by_series.items()
        ]
    )
    return bytes(cramjam.snappy.compress_raw(request.SerializeToString()))


def otlp_body(tag: str, batch: int, base_ms: int) -> bytes:
    by_series: dict[tuple[str, int], list[otlp.NumberDataPoint]] = {}
    for m, s, t, v in samples(tag, batch, base_ms):
        attributes = [
            {"key": "host", "value": {"string_value": f"h{s}"}},
            {"key": "dc", "value": {"string_value": "eu"}},
        ]
        by_series.setdefault((m, s), []).append(
            otlp.NumberDataPoint(attributes=attributes, time_unix_nano=t * 1_000_000, as_double=v)
        )
    metrics = [
        otlp.Metric(name=m, gauge=otlp.Gauge(data_points=[p for (_, _), ps in by_series.items() for p in ps]))
        for m in {m for m, _ in by_series}
    ]
    request = ExportMetricsServiceRequest(
        resource_metrics=[otlp.ResourceMetrics(scope_metrics=[otlp.ScopeMetrics(metrics=metrics)])]
    )
    return request.SerializeToString()


async def run(
    stack: Stack,
    name: str,
    bodies: list[bytes],
    send: Callable[[bytes], Awaitable[None]],
    clients: int,
    pids: dict[str, int],
    baseline: float | None,
) -> float:
    """Send ``bodies``, wait until the writer stored them, print the rate (and its share of
    ``baseline``, gRPC's rate in the same round) and the CPU per million points; returns the rate."""
    queue = list(reversed(bodies))
    start_rows = committed(stack)
    cpu_before = {k: cpu_seconds(p) for k, p in pids.items()}
    started = time.monotonic()

    async def sender() -> None:
        while queue:
            await send(queue.pop())

    await asyncio.gather(*(sender() for _ in range(clients)))
    target = start_rows + len(bodies) * BATCH
    while committed(stack) < target:
        if time.monotonic() - started > 120:
            raise TimeoutError(f"{name}: {committed(stack) - start_rows:.0f} of {len(bodies) * BATCH} rows committed")
        await asyncio.sleep(0.05)
    elapsed = time.monotonic() - started
    points = len(bodies) * BATCH
    cpu = {k: (cpu_seconds(p) - cpu_before[k]) / points * 1e6 for k, p in pids.items()}
    shares = ", ".join(f"{k} {v:.1f}" for k, v in cpu.items())
    rate = points / elapsed
    share = f"{rate / baseline:>5.0%} of gRPC" if baseline else " " * 13
    print(f"{name:<28} {rate:>10,.0f} points/s {share}   CPU s per million points: {shares}", flush=True)
    return rate


async def main(requests: int, clients: int, state_dir: Path, rounds: int, only: list[str]) -> None:
    cfg = private_config(state_dir)
    with Stack(cfg, out=sys.stderr) as stack:
        try:
            await bench(stack, requests, clients, rounds, only)
        finally:
            drop_database(cfg.database)


async def bench(stack: Stack, requests: int, clients: int, rounds: int, only: list[str]) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as http:
        login = await http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = await http.post("/v1/tokens", json={"name": "bench", "scopes": ["read", "write"]}, headers=session)
        token = created.json()["secret"]
        auth = {"Authorization": f"Bearer {token}"}
        pids = {svc: proc.pid for svc, proc in stack.children.items() if svc in ("gateway", "ingest", "ingest_writer")}
        base_ms = int(time.time() * 1000) - 3_600_000
        channel = grpc.aio.insecure_channel(stack.grpc_addr("ingest"))
        write_batch = channel.unary_unary(
            "/tsmesh.v1.IngestService/WriteBatch",
            request_serializer=None,
            response_deserializer=ingest_pb2.WriteResponse.FromString,
        )

        async def grpc_send(body: bytes) -> None:
            await write_batch(body, metadata=(("authorization", f"Bearer {token}"),), timeout=60)

        def post(path: str, headers: dict[str, str]) -> Callable[[bytes], Awaitable[None]]:
            async def send(body: bytes) -> None:
                answer = await http.post(path, content=body, headers={**auth, **headers})
                if answer.status_code >= 300:
                    raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:300]}")

            return send

        cases: list[tuple[str, Callable[[str, int, int], bytes], Callable[[bytes], Awaitable[None]]]] = [
            ("grpc WriteBatch (ingest)", grpc_body, grpc_send),
            ("line protocol /api/v2/write", line_body, post("/api/v2/write?bucket=b&precision=ms", {})),
            ("line protocol /write (v1)", line_body, post("/write?db=b&precision=ms", {})),
            (
                "remote_write 1.0",
                remote_write_body,
                post("/api/v1/write", {"content-type": "application/x-protobuf", "content-encoding": "snappy"}),
            ),
            ("OTLP/HTTP protobuf", otlp_body, post("/otlp/v1/metrics", {"content-type": "application/x-protobuf"})),
        ]
        chosen = [(n, case) for n, case in enumerate(cases) if n == 0 or not only or any(o in case[0] for o in only)]
        print(f"{requests} requests x {BATCH} points per protocol, {clients} clients, {rounds} round(s)", flush=True)
        for round_number in range(rounds):
            baseline: float | None = None
            for number, (name, build, send) in chosen:
                tag = f"p{number}r{round_number}"
                bodies = [build(tag, i, base_ms) for i in range(requests)]
                rate = await run(stack, name, bodies, send, clients, pids, baseline)
                baseline = baseline or rate
        await channel.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--state-dir", type=Path, default=Path("/tmp/tsmesh-bench-push"))
    parser.add_argument("--rounds", type=int, default=1, help="run the protocols this many times, interleaved")
    parser.add_argument(
        "--only", action="append", default=[], help="protocols whose name contains this (gRPC always runs)"
    )
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.clients, args.state_dir, args.rounds, args.only))
