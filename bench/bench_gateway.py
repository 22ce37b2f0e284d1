"""Gateway benchmark (``make bench-gateway``), against a private mesh started by scripts/devstack.py.

Figures, each beside a baseline or target measured in the same run:
1. the cached range query, ``POST /v1/query/range`` (JSON body) and ``GET /v1/query/range?...``
   (auth, two rate-limit decisions, the data-generation read, micro-cache hit) in req/s, against a
   bare ASGI hello-JSON route on the SAME Granian server, its p99 at half that load (wrk, paced with
   its ``delay()`` hook), and the worker's CPU per request (all threads, from /proc);
2. memory per idle WebSocket connection (RSS of the gateway worker before/after 10,000 sockets);
3. 10,000 subscribers (1,000 selectors x 10 sockets), 1,000 points/s written through ingest
   (10,000 deliveries/s): delivery latency from write acknowledged to frame received, then
   increasing rates to find the highest delivery rate with p99 < 50 ms.
``--idle-100k`` instead holds 100,000 idle sockets across 8 workers and 10 client processes.
``--trace`` adds, per rate, each point's time at every hop of the live path and the garbage
collections of query and the gateway (bench-only hooks, ``live_trace.py``); ``--profile`` records
py-spy profiles of both at 1,000 points/s.

WebSocket clients use the lean listener (``TSMESH_GATEWAY_WS_PORT``, websockets 17), see ADR 0401.

Needs ``wrk`` (Debian: ``apt-get install -y wrk``) for part 1; without it part 1 is skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

import grpc
import httpx
import live_trace
from harness import LatencyRecorder, Report
from throwaway import free_port
from tsmesh.v1 import ingest_pb2, ingest_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

HELLO = b'{"hello":"world"}'
_HOUR = 3_600_000_000_000
_NOW = time.time_ns() // _HOUR * _HOUR
RANGE_BODY = (
    '{"selector":{"metric":"bench_cached","matchers":[{"name":"host","op":"=","value":"a"}]},'
    f'"start_ns":{_NOW - _HOUR},"end_ns":{_NOW + _HOUR},"step_ns":60000000000,"aggregation":"avg"}}'
)
RANGE_QUERY = (  # the same query as GET /v1/query/range (no body to bridge)
    f"metric=bench_cached&match=host%3Da&start_ns={_NOW - _HOUR}&end_ns={_NOW + _HOUR}"
    "&step_ns=60000000000&aggregation=avg"
)


def create_bench_app() -> Any:
    """Granian factory: the real gateway plus a bare hello-JSON route in front of it (same server)."""
    from tsmesh_gateway.app import create_app

    gateway = create_app()
    if os.environ.get(live_trace.ENV):
        live_trace.install_gateway()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in ("/hello", "/hello-post"):
            more = scope["path"] == "/hello-post"  # the POST baseline reads its body like the real route
            while more:
                more = (await receive()).get("more_body", False)
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
            )
            await send({"type": "http.response.body", "body": HELLO})
            return
        await gateway(scope, receive, send)

    return app


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


def wrk(url: str, *, seconds: int, connections: int, script: Path | None = None) -> dict[str, float]:
    """Run wrk and parse requests/s and latency percentiles (ms)."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    if script is not None:
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    result: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            result["rps"] = float(parts[1])
        elif "requests in" in line:
            result["requests"] = float(parts[0])
        elif len(parts) == 2 and parts[0] in ("50%", "75%", "90%", "99%"):
            result[f"p{parts[0][:-1]}"] = _ms(parts[1])
        elif "Non-2xx" in line:
            result["non2xx"] = float(parts[-1])
    return result


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def wrk_script(path: Path, token: str, delay_ms: float | None, method: str = "POST") -> Path:
    """The cached range query as wrk sees it: POST with the JSON body, or GET (URL given to wrk)."""
    lines = [f'wrk.method = "{method}"', f'wrk.headers["Authorization"] = "Bearer {token}"']
    if method == "POST":
        lines += [f"wrk.body = '{RANGE_BODY}'", 'wrk.headers["Content-Type"] = "application/json"']
    if delay_ms is not None:
        lines.append(f"function delay() return {delay_ms:.3f} end")
    path.write_text("\n".join(lines) + "\n")
    return path


async def prepare(gateway_url: str, stack: Any) -> tuple[str, str]:
    """Log in, create a read/write API token, write the data the cached query reads."""
    from devstack import DEMO_EMAIL, DEMO_TENANT

    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as http:
        login = await http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        login.raise_for_status()
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = await http.post(
            "/v1/tokens", json={"name": f"bench-{uuid.uuid4().hex[:6]}", "scopes": ["read", "write"]}, headers=session
        )
        created.raise_for_status()
        token = created.json()["secret"]
        now = time.time_ns()
        points = [
            {"metric": "bench_cached", "labels": {"host": "a"}, "timestamp_ns": now - i * 10**9, "value": i}
            for i in range(100)
        ]
        (
            await http.post("/v1/write", json={"points": points}, headers={"Authorization": f"Bearer {token}"})
        ).raise_for_status()
        for _ in range(100):
            answer = await http.post(
                "/v1/query/range",
                content=RANGE_BODY,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            if answer.status_code != 200:
                raise RuntimeError(f"range query refused: {answer.text}")
            if answer.json()["series"]:
                break
            await asyncio.sleep(0.2)
        for _ in range(50):
            check = await http.post(
                "/v1/query/range",
                content=RANGE_BODY,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            if check.headers.get("x-cache") == "hit":
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the cached query never hit the micro-cache")
        return token, login.json()["access_token"]


def http_part(report: Report, gw: BenchGateway, token: str, tmp: Path, seconds: int, workers: int = 1) -> None:
    if shutil.which("wrk") is None:
        print("NOTE: wrk not found (apt-get install -y wrk): HTTP req/s figures skipped", flush=True)
        return

    def measured(url: str, script: Path | None = None) -> dict[str, float]:
        """wrk at 64 connections, plus the workers' CPU (all threads) per answered request."""
        before = sum(cpu_seconds(pid) for pid in gw.workers)
        result = wrk(url, seconds=seconds, connections=64, script=script)
        spent = sum(cpu_seconds(pid) for pid in gw.workers) - before
        result["cpu_us"] = spent / max(1.0, result.get("requests", 0.0)) * 1e6
        if result.get("non2xx"):
            print(f"WARNING: {result['non2xx']:.0f} non-2xx answers from {url}", flush=True)
        return result

    wrk(gw.url + "/hello", seconds=2, connections=32)
    hello = measured(gw.url + "/hello")
    post = wrk_script(tmp / "cached.lua", token, None)
    get = wrk_script(tmp / "cached-get.lua", token, None, method="GET")
    hello_post = measured(gw.url + "/hello-post", post)
    forms = {"POST": (gw.url + "/v1/query/range", post), "GET": (gw.url + "/v1/query/range?" + RANGE_QUERY, get)}
    plural = "s" if workers > 1 else ""
    for method, (url, script) in forms.items():
        wrk(url, seconds=2, connections=32, script=script)
        cached = measured(url, script)
        connections = 32
        half = cached["rps"] / 2
        paced = wrk_script(tmp / f"paced-{method}.lua", token, connections / half * 1000.0, method=method)
        at_half = wrk(url, seconds=seconds, connections=connections, script=paced)
        report.add(
            f"cached query, {method} ({workers} worker{plural})",
            cached["rps"],
            "req/s",
            "bare hello-JSON, same server",
            hello["rps"],
            ">= 60% and >= 10,000 req/s",
        )
        if method == "POST":
            report.add(
                "  same vs a bare route that reads the same POST body",
                cached["rps"],
                "req/s",
                "bare POST hello-JSON, same server",
                hello_post["rps"],
            )
        report.add(
            f"  {method} p99 at ~half load",
            at_half["p99"],
            "ms",
            "hello p99 at full load",
            hello.get("p99"),
            "<= 10 ms",
        )
        report.add("  (offered load at half)", at_half["rps"], "req/s")
        report.add(f"  worker CPU per {method} cached query", cached["cpu_us"], "us", "per hello", hello["cpu_us"])
    report.add("worker CPU per POST hello (body read)", hello_post["cpu_us"], "us", "per hello", hello["cpu_us"])


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
    total, group, processes = (2_000, 10, 2) if quick else (10_000, 10, 4)
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
        acks = sum(ask(clients, "subscribe", group))
        assert acks == total, acks
        selectors = total // group
        best = 0.0
        watched = {**{n: p.pid for n, p in stack.children.items() if n != "gateway"}, "bench-gateway": gw.workers[0]}
        watched.update({f"client{i}": proc.pid for i, (proc, _) in enumerate(clients)})
        traced = [stack.children["query"].pid, gw.workers[0]]
        for rate in (1_000, 2_000, 4_000, 8_000):
            profilers: list[subprocess.Popen[bytes]] = []
            if profile is not None and rate == 1_000:
                profilers = start_profilers(profile, {"query": traced[0], "gateway": traced[1]}, seconds)
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
                    "gateway": gw.url + "/metrics",
                }
            )
            samples = ask(clients, "collect")
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
                print(f"per-hop times at {rate} points/s (write ack = 0):", flush=True)
                print("\n".join(live_trace.breakdown(hops, written)), flush=True)
                for name in ("gcquery", "gcgateway"):
                    print(f"  garbage collections, {name[2:]}: {live_trace.gc_summary(hops.get(name, []))}")
            summary = recorder.summary()
            expected = len(written) * group
            print(
                f"rate {rate} points/s: delivered {delivered}/{expected}, p50 {summary['p50']:.2f} ms, "
                f"p99 {summary['p99']:.2f} ms",
                flush=True,
            )
            if rate == 1_000:
                report.add(
                    "delivery p99, 1,000 points/s x 10 (write ack -> frame)", summary["p99"], "ms", target="<= 5 ms"
                )
                report.add("  delivery p50 at the same load", summary["p50"], "ms")
                report.add("  deliveries/s measured", delivered / seconds, "msg/s", "expected", expected / seconds)
            if summary["p99"] < 50 and delivered >= 0.99 * expected:
                best = delivered / seconds
            else:
                break
        report.add("highest delivery rate with p99 < 50 ms", best, "msg/s", "Centrifugo per CPU (Go)", 12_500)
    finally:
        try:
            ask(clients, "close", timeout=60)
        finally:
            for proc, _ in clients:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()


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
    total, group, processes = (2_000, 10, 2) if quick else (10_000, 10, 4)
    clients = start_clients(gw.ws_url, token, total, processes)
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, ask, clients, "connect")
        await loop.run_in_executor(None, ask, clients, "subscribe", group)
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
            samples = await loop.run_in_executor(None, ask, clients, "collect")
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-100k", action="store_true", help="hold 100,000 idle sockets (opt-in)")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("TSMESH_BENCH_SECONDS", "8")))
    parser.add_argument("--quick", action="store_true", help="2,000 sockets instead of 10,000")
    parser.add_argument("--only", choices=("http", "ws", "fanout"), help="run one part only")
    parser.add_argument("--workers", type=int, default=1, help="gateway workers for the HTTP part (default 1)")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="WebSocket part: per-hop times and garbage-collection pauses (bench hooks)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="WebSocket part: py-spy profiles of query and the gateway at 1,000 points/s",
    )
    args = parser.parse_args()
    from devstack import Stack
    from stack_config import drop_database, private_config

    tmp = Path(tempfile.mkdtemp(prefix="tsmesh-bench-gateway-"))
    cfg = private_config(tmp / "stack", log_level="WARNING")
    environ = {**os.environ, "TSMESH_QUERY_MAX_SUBSCRIBERS": "100000", "TSMESH_QUERY_SUBSCRIBER_QUEUE": "100000"}
    trace = None
    if args.trace:
        trace = tmp / "trace"
        trace.mkdir()
        site = str(ROOT / "bench" / "live_trace_site")
        environ.update(
            TSMESH_BENCH_TRACE_DIR=str(trace),
            PYTHONPATH=os.pathsep.join(p for p in (site, os.environ.get("PYTHONPATH")) if p),
        )
    stack = Stack(cfg, environ=environ, out=sys.stderr)
    report = Report("gateway")
    try:
        stack.start()
        workers = args.workers if args.only == "http" else 1
        gw = BenchGateway(stack, workers=workers, log=tmp / "gateway.log")
        try:
            token, _ = await prepare(gw.url, stack)
            if args.idle_100k:
                gw.stop()
                await idle_100k(report, stack, tmp, token)
            else:
                if args.only in (None, "http"):
                    http_part(report, gw, token, tmp, args.seconds, workers)
                if args.only in (None, "ws"):
                    await ws_part(
                        report, stack, gw, token, float(args.seconds), args.quick, trace, tmp if args.profile else None
                    )
                gw.stop()
                if args.only in (None, "fanout"):
                    await fanout_part(report, stack, tmp, token, float(args.seconds), args.quick, trace)
        finally:
            if gw.proc.poll() is None:
                gw.stop()
    finally:
        stack.stop()
        drop_database(cfg.database)
    report.print()
    print()
    print(report.markdown())


if __name__ == "__main__":
    asyncio.run(main())
