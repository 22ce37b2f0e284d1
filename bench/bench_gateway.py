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
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import live_trace
from gateway_procs import ROOT, BenchGateway, cpu_seconds
from gateway_ws_parts import fanout_part, idle_100k, ws_part
from harness import Report

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
    from tsmesh_gateway.wiring import create_app

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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle-100k", action="store_true", help="hold 100,000 idle sockets (opt-in)")
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("TSMESH_BENCH_SECONDS", "8")))
    parser.add_argument("--quick", action="store_true", help="2,000 sockets instead of 10,000")
    parser.add_argument("--only", choices=("http", "ws", "fanout"), help="run one part only")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="gateway workers for the HTTP part, or the WebSocket part with --only ws (default 1)",
    )
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
        workers = args.workers if args.only in ("http", "ws") else 1
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
