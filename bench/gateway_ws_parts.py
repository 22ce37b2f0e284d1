"""The WebSocket parts of the gateway benchmark (``bench_gateway.py``): delivery latency through the
mesh, the gateway's fan-out alone, and ``--idle-100k``."""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import grpc
import live_trace
from gateway_procs import ROOT, BenchGateway, cpu_seconds, print_metrics
from harness import LatencyRecorder, Report
from tsmesh.v1 import ingest_pb2, ingest_pb2_grpc


def start_clients(url: str, token: str, total: int, processes: int, ip_base: int = 1) -> list[Any]:
    ctx = mp.get_context("spawn")
    sys.path.insert(0, str(ROOT / "bench"))
    from gateway_ws_load import client_process

    share = math.ceil(total / processes)
    clients = []
    for i in range(processes):
        first = i * share
        count = min(share, total - first)
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=client_process, args=(child, url, token, first, count, f"127.0.0.{ip_base + i}"), daemon=True
        )
        proc.start()
        clients.append((proc, parent))
    return clients


def ask(clients: list[Any], command: str, arg: Any = None, timeout: float = 300) -> list[Any]:
    for _, pipe in clients:
        pipe.send((command, arg))
    answers = []
    for _, pipe in clients:
        if not pipe.poll(timeout):
            raise TimeoutError(f"client did not answer {command!r}")
        answers.append(pipe.recv()[1])
    return answers


async def write_load(ingest_addr: str, token: str, rate: int, seconds: float, selectors: int) -> dict[int, int]:
    """Write ``rate`` points/s (one metric per selector, round robin) in 10 ms batches; ts -> ack time."""
    acks: dict[int, int] = {}
    async with grpc.aio.insecure_channel(ingest_addr) as channel:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        metadata = (("authorization", f"Bearer {token}"),)
        per_tick = max(1, rate // 100)
        interval = per_tick / rate
        counter = 0
        started = time.monotonic()
        tick = 0
        pending: set[asyncio.Task[None]] = set()

        async def send(batch: ingest_pb2.WriteRequest, stamps: list[int]) -> None:
            answer = await stub.WriteBatch(batch, metadata=metadata, timeout=10)
            now = time.time_ns()
            if answer.rejected:
                print(f"WARNING: {answer.rejected} points rejected: {answer.errors[0].reason}", flush=True)
            for ts in stamps:
                acks[ts] = now

        while time.monotonic() - started < seconds:
            batch = ingest_pb2.WriteRequest()
            stamps = []
            base = time.time_ns()
            for j in range(per_tick):
                ts = base + j
                batch.points.add(
                    metric=f"bench_ws_{counter % selectors}", labels={"src": "bench"}, timestamp_ns=ts, value=1.0
                )
                stamps.append(ts)
                counter += 1
            task = asyncio.create_task(send(batch, stamps))
            pending.add(task)
            task.add_done_callback(pending.discard)
            tick += 1
            delay = started + tick * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        await asyncio.gather(*pending, return_exceptions=True)
    return acks


def latencies(samples: list[bytes], acks: dict[int, int]) -> tuple[LatencyRecorder, int]:
    recorder = LatencyRecorder()
    delivered = 0
    for raw in samples:
        values = array("q")
        values.frombytes(raw)
        for i in range(0, len(values), 2):
            ack = acks.get(values[i])
            if ack is None:
                continue
            delivered += 1
            recorder.record(max(0, values[i + 1] - ack) / 1e9)
    return recorder, delivered


def start_profilers(out: Path, pids: dict[str, int], seconds: float) -> list[subprocess.Popen[bytes]]:
    """py-spy (if on PATH) records each process for ``seconds`` into ``out/profile-<name>.txt``."""
    if shutil.which("py-spy") is None:
        print("NOTE: py-spy not on PATH: no profiles", flush=True)
        return []
    record = ["py-spy", "record", "--nonblocking", "-r", "200", "-d", str(int(seconds)), "-f", "raw"]
    return [
        subprocess.Popen(
            [*record, "-p", str(pid), "-o", str(out / f"profile-{name}.txt")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]


def trace_signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        os.kill(pid, sig)


async def ws_part(
    report: Report,
    stack: Any,
    gw: BenchGateway,
    token: str,
    seconds: float,
    quick: bool,
    trace: Path | None = None,
    profile: Path | None = None,
) -> None:
    # two client processes hold 10,000 sockets under the 20,000 open-file cap; each more one is
    # another process waking for every burst of frames on the 2 cores the server runs on
    total, group, processes = (2_000, 10, 2) if quick else (10_000, 10, 2)
    clients = start_clients(gw.ws_url, token, total, processes)
    try:
        before = gw.rss_kib()
        took = max(ask(clients, "connect"))
        await asyncio.sleep(2)
        after = gw.rss_kib()
        per_conn = (after - before) * 1024 / total
        report.add(
            f"memory per idle connection ({total:,} sockets)", per_conn / 1024, "KiB", "Centrifugo (Go)", 30, "<= 30 KB"
        )
        report.add(f"time to connect {total:,} sockets", took, "s")
        acks = sum(ask(clients, "subscribe", total // group))
        assert acks == total, acks
        selectors = total // group
        best = 0.0
        watched = {n: p.pid for n, p in stack.children.items() if n != "gateway"}
        watched.update({f"gateway{i}": pid for i, pid in enumerate(gw.workers)})
        watched.update({f"client{i}": proc.pid for i, (proc, _) in enumerate(clients)})
        traced = [stack.children["query"].pid, stack.children["ingest"].pid, *gw.workers]
        rate: int | None = 1_000
        while rate is not None:
            profilers: list[subprocess.Popen[bytes]] = []
            if profile is not None and rate == 1_000:
                names = {"query": traced[0], "ingest": traced[1], "gateway": traced[2]}
                profilers = start_profilers(profile, names, seconds)
            if trace is not None:
                trace_signal(traced, signal.SIGUSR2)
            before_cpu = {name: cpu_seconds(pid) for name, pid in watched.items()}
            started = time.monotonic()
            ask(clients, "record", True)
            written = await write_load(stack.grpc_addr("ingest"), token, rate, seconds, selectors)
            elapsed = time.monotonic() - started
            shares = {n: round((cpu_seconds(p) - before_cpu[n]) / elapsed, 2) for n, p in watched.items()}
            print(f"CPU share per process at {rate} points/s: {shares}", flush=True)
            await asyncio.sleep(1.0)
            ask(clients, "record", False)
            # scraped once the last points are delivered: a scrape competes with them for the CPU
            print_metrics(
                {
                    "query": stack.metrics_url("query"),
                    "ingest": stack.metrics_url("ingest"),
                    "gateway": gw.internal_url + "/metrics",
                }
            )
            samples, read = split(ask(clients, "collect"))
            recorder, delivered = latencies(samples, written)
            print(live_trace.timeline(received(samples), written), flush=True)
            for profiler in profilers:
                profiler.wait()
            if profilers:
                print(f"py-spy profiles (collapsed stacks): {profile}/profile-*.txt", flush=True)
            if trace is not None:
                trace_signal(traced, signal.SIGUSR1)
                await asyncio.sleep(1.0)
                hops = live_trace.load(trace)
                hops["client"] = received(samples)
                hops["read"] = received(read)
                print(f"per-hop times at {rate} points/s (write ack = 0):", flush=True)
                print("\n".join(live_trace.breakdown(hops, written)), flush=True)
                print(live_trace.tail(hops, written), flush=True)
                for name in ("gcingest", "gcquery", "gcgateway"):
                    print(f"  garbage collections, {name[2:]}: {live_trace.gc_summary(hops.get(name, []))}")
            summary = recorder.summary()
            as_read = latencies(read, written)[0].summary()
            expected = len(written) * group
            print(
                f"rate {rate} points/s: delivered {delivered}/{expected}, p50 {summary['p50']:.2f} ms, "
                f"p99 {summary['p99']:.2f} ms (as read by the client processes: p50 {as_read['p50']:.2f} ms, "
                f"p99 {as_read['p99']:.2f} ms)",
                flush=True,
            )
            if rate == 1_000:
                report.add(
                    "delivery p99, 1,000 points/s x 10 (write ack -> frame at the client socket)",
                    summary["p99"],
                    "ms",
                    target="<= 5 ms",
                )
                report.add("  delivery p50 at the same load", summary["p50"], "ms")
                report.add("  p99 as read by the client processes (their scheduling included)", as_read["p99"], "ms")
                report.add("  deliveries/s measured", delivered / seconds, "msg/s", "expected", expected / seconds)
            held = summary["p99"] < 50 and delivered >= 0.99 * expected
            if held:
                best = max(best, delivered / seconds)
            else:  # let the backlog drain before another rate is measured
                await asyncio.sleep(min(30.0, summary["p99"] / 1000 + 1.0))
            rate = next_rate(rate, held)
        report.add("highest delivery rate with p99 < 50 ms", best, "msg/s", "Centrifugo per CPU (Go)", 12_500)
    finally:
        try:
            ask(clients, "close", timeout=60)
        finally:
            for proc, _ in clients:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()


def next_rate(rate: int, held: bool) -> int | None:
    """The next write rate of the delivery sweep: doubling from 1,000 points/s while p99 holds
    under 50 ms (up to 8,000); when 1,000 already fails (a machine the target load saturates),
    halving down to 125 until one holds, so the highest sustainable rate is still a figure."""
    if rate >= 1_000:
        if held:
            return rate * 2 if rate < 8_000 else None
        return rate // 2 if rate == 1_000 else None
    if held:
        return None
    return rate // 2 if rate > 125 else None


def split(answers: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """The clients' (arrived at the socket, read by the process) samples, each list over all clients."""
    return [arrived for arrived, _ in answers], [read for _, read in answers]


def received(samples: list[bytes]) -> list[tuple[int, int]]:
    pairs: list[tuple[int, int]] = []
    for raw in samples:
        values = array("q")
        values.frombytes(raw)
        pairs.extend(zip(values[0::2], values[1::2], strict=True))
    return pairs


async def fanout_part(
    report: Report, stack: Any, tmp: Path, token: str, seconds: float, quick: bool, trace: Path | None = None
) -> None:
    """The gateway alone: a synthetic upstream Subscribe -> frame received, same sockets and load."""
    from gateway_fanout_upstream import start
    from tsmesh.v1 import common_pb2

    server, port, upstream = await start()
    traced = {live_trace.ENV: str(trace)} if trace is not None else {}
    gw = BenchGateway(stack, workers=1, log=tmp / "gateway-fanout.log", TSMESH_QUERY_ADDR=f"127.0.0.1:{port}", **traced)
    total, group, processes = (2_000, 10, 2) if quick else (10_000, 10, 2)
    clients = start_clients(gw.ws_url, token, total, processes)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, ask, clients, "connect")
        await loop.run_in_executor(None, ask, clients, "subscribe", total // group)
        selectors = total // group
        best = 0.0
        for rate in (1_000, 2_000, 4_000, 8_000):
            if trace is not None:
                trace_signal(gw.workers, signal.SIGUSR2)
            await loop.run_in_executor(None, ask, clients, "record", True)
            sent: dict[int, int] = {}
            per_tick, started, tick, counter = max(1, rate // 100), time.monotonic(), 0, 0
            while time.monotonic() - started < seconds:
                base = time.time_ns()
                points = []
                for j in range(per_tick):
                    points.append(common_pb2.Point(metric=f"bench_ws_{counter % selectors}", timestamp_ns=base + j))
                    sent[base + j] = time.time_ns()
                    counter += 1
                upstream.publish(points)
                tick += 1
                delay = started + tick * (per_tick / rate) - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            await asyncio.sleep(1.0)
            await loop.run_in_executor(None, ask, clients, "record", False)
            samples, _ = split(await loop.run_in_executor(None, ask, clients, "collect"))
            recorder, delivered = latencies(samples, sent)
            print(live_trace.timeline(received(samples), sent), flush=True)
            if trace is not None:
                trace_signal(gw.workers, signal.SIGUSR1)
                await asyncio.sleep(1.0)
                hops = live_trace.load(trace)
                hops["client"] = received(samples)
                print(f"gateway alone, per-hop times at {rate} points/s (upstream publish = 0):", flush=True)
                print("\n".join(live_trace.breakdown(hops, sent)), flush=True)
                print(f"  garbage collections, gateway: {live_trace.gc_summary(hops.get('gcgateway', []))}")
            summary = recorder.summary()
            expected = len(sent) * group
            print(
                f"fan-out only, rate {rate} points/s: delivered {delivered}/{expected}, "
                f"p50 {summary['p50']:.2f} ms, p99 {summary['p99']:.2f} ms",
                flush=True,
            )
            if rate == 1_000:
                report.add("gateway alone: fan-out p99 at 1,000 points/s x 10", summary["p99"], "ms", target="<= 5 ms")
                report.add("  fan-out p50 at the same load", summary["p50"], "ms")
            if summary["p99"] < 50 and delivered >= 0.99 * expected:
                best = delivered / seconds
            else:
                break
        report.add(
            "gateway alone: highest delivery rate with p99 < 50 ms", best, "msg/s", "Centrifugo per CPU (Go)", 12_500
        )
    finally:
        try:
            await loop.run_in_executor(None, lambda: ask(clients, "close", timeout=60))
        finally:
            for proc, _ in clients:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
            gw.stop()
            await server.stop(0)


async def idle_100k(report: Report, stack: Any, tmp: Path, token: str) -> None:
    gw = BenchGateway(stack, workers=8, log=tmp / "gateway-100k.log")
    try:
        clients = start_clients(gw.ws_url, token, 100_000, 10)
        try:
            before = gw.rss_kib()
            took = max(ask(clients, "connect", timeout=600))
            await asyncio.sleep(3)
            after = gw.rss_kib()
            report.add("100,000 idle sockets: time to connect", took, "s")
            report.add("100,000 idle sockets: gateway RSS added", (after - before) / 1024, "MiB")
            report.add("  per connection", (after - before) / 100_000, "KiB", target="<= 30 KB")
        finally:
            ask(clients, "close", timeout=120)
            for proc, _ in clients:
                proc.join(10)
    finally:
        gw.stop()
