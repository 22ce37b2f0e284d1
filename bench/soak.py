"""Soak (``make soak``, never in ``make test``): a private stack under a steady load for ``SOAK_SECONDS``
(default 1,800), at half the benchmarked rates (docs/benchmarks.md), with 1,000 WebSocket subscribers.

Load (each part in a process of its own, open loop: a late answer never slows the load down):
- bulk writes, line protocol through the gateway (``/api/v2/write``): ``SOAK_WRITE_POINTS_PER_S``
  (default 34,000: half of the 68,039 points/s of ``bench_push.py``), 1,000-point requests over
  1,000 series;
- cached range queries through the gateway (``GET /v1/query/range``): ``SOAK_QUERY_PER_S`` (default
  23,700: half of the 47,527 req/s of ``bench_gateway.py``; every commit moves the generation, so
  the micro-cache misses after each one);
- live writes (``/v1/write``) to 100 metrics watched by ``SOAK_SUBSCRIBERS`` sockets (default 1,000,
  10 per metric): ``SOAK_LIVE_POINTS_PER_S`` (default 500, so 5,000 deliveries/s: half of the
  benchmark's 10,000).

Figures in a window after warm-up ("start") and in the last window ("end"): RSS of every process
of the stack, p99 of writes, queries and live delivery (point timestamp -> frame at the socket),
achieved rates and errors. Exits 1 unless every process's RSS grew by at most 10%, nothing failed
(HTTP errors, sockets lost or closed by the gateway) and every load held at least 90% of its rate.
``SOAK_SCALE`` multiplies every rate (a smaller machine, a quick check).
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing as mp
import os
import re
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "bench"))

from devstack import DEMO_EMAIL, DEMO_TENANT, Stack  # noqa: E402
from procstats import rss_by_service  # noqa: E402
from stack_config import drop_database, private_config  # noqa: E402

LIVE_SELECTORS = 100
QUERY = "metric=soak_bulk_v&match=host%3Dh1&start_ns={start}&end_ns={end}&step_ns=60000000000&aggregation=avg"


def setting(name: str, default: float) -> float:
    value = os.environ.get(name)
    try:
        return float(value) if value else default
    except ValueError:
        sys.exit(f"{name}: must be a number, got {value!r}")


class Load:
    """One load process and its pipe."""

    def __init__(self, name: str, target: float, unit: str, *args: Any) -> None:
        from soak_load import load_process

        self.name, self.target, self.unit = name, target, unit
        ctx = mp.get_context("spawn")
        self.pipe, child = ctx.Pipe()
        self.proc = ctx.Process(target=load_process, args=(child, *args), daemon=True)
        self.proc.start()

    def ask(self, command: str) -> Any:
        self.pipe.send(command)
        if not self.pipe.poll(60):
            raise TimeoutError(f"{self.name} load did not answer {command!r}")
        return self.pipe.recv()


def ask_clients(clients: list[Any], command: str, arg: Any = None) -> list[Any]:
    from gateway_ws_parts import ask

    return ask(clients, command, arg)


def deliveries(samples: list[tuple[bytes, bytes]]) -> tuple[int, float]:
    """(points delivered, p99 ms of point timestamp -> frame at the client's socket)."""
    delays: list[int] = []
    for arrived, _ in samples:
        values = array("q")
        values.frombytes(arrived)
        delays.extend(values[i + 1] - values[i] for i in range(0, len(values), 2))
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))] / 1e6 if delays else float("nan")
    return len(delays), p99


async def gateway_closes(url: str) -> float:
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(url + "/metrics")).text
    return sum(float(v) for v in re.findall(r"^tsmesh_gateway_ws_closed_total\{[^}]*\} ([0-9.e+]+)$", text, re.M))


async def api_token(stack: Stack) -> str:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        login = await http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = await http.post("/v1/tokens", json={"name": "soak", "scopes": ["read", "write"]}, headers=session)
        return str(created.json()["secret"])


def window_figures(loads: list[Load], clients: list[Any]) -> dict[str, Any]:
    figures = {load.name: load.ask("collect") for load in loads}
    samples = [s for s in ask_clients(clients, "collect")]
    delivered, p99 = deliveries(samples)
    figures["live delivery"] = {"p99_ms": p99, "delivered": delivered}
    return figures


def start_window(loads: list[Load], clients: list[Any]) -> None:
    for load in loads:
        load.ask("window")
    ask_clients(clients, "record", True)


async def soak(seconds: float, scale: float) -> bool:
    from gateway_ws_parts import start_clients

    write_rate = setting("SOAK_WRITE_POINTS_PER_S", 34_000) * scale
    query_rate = setting("SOAK_QUERY_PER_S", 23_700) * scale
    live_rate = setting("SOAK_LIVE_POINTS_PER_S", 500) * scale
    subscribers = int(setting("SOAK_SUBSCRIBERS", 1_000))
    warmup = min(300.0, max(20.0, seconds / 6))
    window = min(300.0, max(20.0, seconds / 6))
    if seconds < warmup + 2 * window:
        sys.exit(f"SOAK_SECONDS: at least {warmup + 2 * window:.0f} for a warm-up and two windows")

    cfg = private_config(Path(os.environ.get("TMPDIR", "/tmp")) / f"soak-{os.getpid()}", log_level="WARNING")
    environ = {
        **os.environ,
        "TSMESH_GATEWAY_RATE_LIMITS": "false",  # the soak measures the mesh, not the per-tenant limits
        "TSMESH_INGEST_POINTS_PER_SECOND": "10000000",
        "TSMESH_INGEST_BURST_POINTS": "10000000",
        "TSMESH_QUERY_MAX_SUBSCRIBERS": "100000",
        "TSMESH_QUERY_MAX_SUBSCRIBERS_PER_TENANT": "100000",
        # the subscribers share one token and one address (127.0.0.1)
        "TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_TOKEN": "100000",
        "TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_ADDRESS": "100000",
        "TSMESH_GATEWAY_WS_HANDSHAKES_PER_ADDRESS": "100000:100000",
    }
    stack = Stack(cfg, environ=environ, out=sys.stderr)
    loads: list[Load] = []
    clients: list[Any] = []
    try:
        stack.start()
        token = await api_token(stack)
        now = time.time_ns()
        query = QUERY.format(start=now - 3600 * 10**9, end=now + 3600 * 10**9)
        port = cfg.http_port
        clients = start_clients(stack.gateway_url.replace("http", "ws") + "/v1/stream", token, subscribers, 1)
        ask_clients(clients, "connect")
        subscribed = sum(ask_clients(clients, "subscribe", LIVE_SELECTORS))
        print(f"soak: {subscribed} of {subscribers} sockets subscribed", flush=True)
        bulk_points = 1_000
        loads = [
            Load(
                "writes",
                write_rate,
                "points/s",
                "bulk",
                port,
                token,
                write_rate / bulk_points,
                16,
                f"{bulk_points},1000",
            ),
            Load("queries", query_rate, "req/s", "query", port, token, query_rate, 64, query),
            Load("live writes", live_rate, "points/s", "live", port, token, live_rate / 50, 4, f"50,{LIVE_SELECTORS}"),
        ]
        started = time.monotonic()
        print(f"soak: {seconds:.0f} s (warm-up {warmup:.0f} s, windows of {window:.0f} s), scale {scale}", flush=True)
        await asyncio.sleep(warmup)
        rss_start = rss_by_service(stack.children)
        start_window(loads, clients)
        await asyncio.sleep(window)
        first = window_figures(loads, clients)
        ask_clients(clients, "record", False)
        await asyncio.sleep(max(0.0, started + seconds - window - time.monotonic()))
        start_window(loads, clients)
        await asyncio.sleep(window)
        last = window_figures(loads, clients)
        rss_end = rss_by_service(stack.children)
        lost = sum(ask_clients(clients, "lost"))
        closes = await gateway_closes(stack.gateway_url)
    finally:
        for load in loads:  # stop the loads before the stack, so that none counts its shutdown
            load.pipe.send("stop")
        for load in loads:
            if load.pipe.poll(30):
                load.pipe.recv()
            load.proc.join(10)
        if clients:
            ask_clients(clients, "close")
        await asyncio.to_thread(stack.stop)  # it runs its own event loop
        drop_database(cfg.database)

    return report(seconds, scale, loads, first, last, rss_start, rss_end, lost, closes, subscribers, live_rate)


def report(
    seconds: float,
    scale: float,
    loads: list[Load],
    first: dict[str, Any],
    last: dict[str, Any],
    rss_start: dict[str, int],
    rss_end: dict[str, int],
    lost: int,
    closes: float,
    subscribers: int,
    live_rate: float,
) -> bool:
    failures: list[str] = []
    print(f"\nsoak of {seconds:.0f} s at scale {scale} ({time.strftime('%H:%M', time.gmtime())} UTC)\n")
    print("| process | RSS start MiB | RSS end MiB | growth | criterion |")
    print("|---|---|---|---|---|")
    for name, before in rss_start.items():
        after = rss_end.get(name, 0)
        growth = (after - before) / before if before else math.inf
        if name == "broker":  # the bundled dev broker keeps its whole log in memory (DESIGN.md)
            print(f"| {name} | {before / 2**20:.1f} | {after / 2**20:.1f} | {growth:+.1%} | none: log in memory |")
            continue
        ok = growth <= 0.10
        failures += [] if ok else [f"RSS of {name} grew {growth:.1%}"]
        print(
            f"| {name} | {before / 2**20:.1f} | {after / 2**20:.1f} | {growth:+.1%} "
            f"| <= +10% {'met' if ok else 'MISSED'} |"
        )
    print("\n| load | target | start: rate, p50 / p99 ms | end: rate, p50 / p99 ms | errors (start/end) |")
    print("|---|---|---|---|---|")
    for load in loads:
        a, b = first[load.name], last[load.name]
        unit = load.unit
        print(
            f"| {load.name} | {load.target:,.0f} {unit} "
            f"| {a['units_per_s']:,.0f}, {a['p50_ms']:.1f} / {a['p99_ms']:.1f} "
            f"| {b['units_per_s']:,.0f}, {b['p50_ms']:.1f} / {b['p99_ms']:.1f} | {a['errors']} / {b['errors']} |"
        )
        for label, w in (("start", a), ("end", b)):
            if w["errors"]:
                failures.append(f"{load.name}: {w['errors']} errors in the {label} window: {w['kinds']}")
            if w["units_per_s"] < 0.9 * load.target:
                failures.append(
                    f"{load.name}: {w['units_per_s']:,.0f} {unit} in the {label} window, target {load.target:,.0f}"
                )
    expected = live_rate * subscribers / LIVE_SELECTORS
    for label, w in (("start", first), ("end", last)):
        live = w["live delivery"]
        rate = live["delivered"] / max(1e-9, w["writes"]["seconds"])
        print(
            f"| live delivery ({label}) | {expected:,.0f} points/s "
            f"| {rate:,.0f} points/s, p99 {live['p99_ms']:.1f} ms | | |"
        )
        if rate < 0.9 * expected:
            failures.append(f"live delivery {rate:,.0f} points/s in the {label} window, expected {expected:,.0f}")
    print(f"\nsockets lost: {lost}; closed by the gateway: {closes:.0f}")
    if lost or closes:
        failures.append(f"{lost} sockets lost, {closes:.0f} closed by the gateway")
    print("\nsoak " + ("PASSED" if not failures else "FAILED:\n- " + "\n- ".join(failures)), flush=True)
    return not failures


def main() -> None:
    seconds = setting("SOAK_SECONDS", 1800)
    scale = setting("SOAK_SCALE", 1.0)
    sys.exit(0 if asyncio.run(soak(seconds, scale)) else 1)


if __name__ == "__main__":
    main()
