"""A/B of query's live feed client in one process: PUBLISH -> batch out of ``LiveHub.stream``.

A = the live hub of a git ref (default ``main``: its hand-written RESP client), B = this checkout's
(``LeanRedis.psubscribe``). Same loop, same Redis, rounds alternate A B, B A, ... so drift hits both alike;
1,000 points/s in batches of 5 (bench_query's subscribe-latency load). Prints p50/p99 per side and
B/A.

    .venv/bin/python bench/bench_live_ab.py [--ref main] [--rounds 4] [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import LatencyRecorder
from redis.asyncio import Redis
from tsmesh.v1 import common_pb2

from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.redis_keys import live_channel
from tsmesh_query import live
from tsmesh_query.config import QueryLimits, SubscribeConfig
from tsmesh_query.selectors import parse_selector

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"


def live_module_of(ref: str) -> Any:
    """``tsmesh_query.live`` as it is at ``ref``, loaded under another name beside this checkout's."""
    source = subprocess.run(
        ["git", "show", f"{ref}:services/query/src/tsmesh_query/live.py"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="live-ab-")) / "live_baseline.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("tsmesh_query.live_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def one_round(hub: Any, publisher: Redis, seconds: float) -> LatencyRecorder:
    follower = asyncio.create_task(hub.follow())
    await asyncio.wait_for(hub.connected.wait(), 5)
    tenant = f"ab-{uuid.uuid4().hex[:8]}"
    selector = parse_selector(common_pb2.Selector(metric="cpu"), QueryLimits())
    stream = hub.stream(tenant, selector)
    await anext(stream)  # the first heartbeat: subscribed
    rec = LatencyRecorder()

    async def receive() -> None:
        async for response in stream:
            if response.HasField("points"):
                rec.record((time.time_ns() - response.points.accepted_at_ns) / 1e9)

    receiver = asyncio.create_task(receive())
    per_batch, rate = 5, 1000
    interval = per_batch / rate
    nxt = time.perf_counter()
    end = nxt + seconds
    while nxt < end:
        points = [common_pb2.Point(metric="cpu", labels={"host": "a"}, timestamp_ns=time.time_ns(), value=1.0)]
        batch = common_pb2.PointBatch(
            tenant_id=tenant, points=points * per_batch, series_ids=[1] * per_batch, accepted_at_ns=time.time_ns()
        )
        await publisher.publish(live_channel(tenant), batch.SerializeToString())
        nxt += interval
        await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
    await asyncio.sleep(0.2)
    for task in (receiver, follower):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await stream.aclose()
    return rec


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default="main")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    baseline = live_module_of(args.ref)
    publisher = Redis.from_url(REDIS_URL)
    sides = {
        f"A {args.ref}": lambda: baseline.LiveHub(Redis.from_url(REDIS_URL), SubscribeConfig()),
        "B branch": lambda: live.LiveHub(Redis.from_url(REDIS_URL), SubscribeConfig(), LeanRedis.from_url(REDIS_URL)),
    }
    results = {name: LatencyRecorder() for name in sides}
    for i in range(args.rounds):
        order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))  # A B, B A, ...
        for name, make in order:
            results[name].extend(await one_round(make(), publisher, args.seconds))
    await publisher.aclose()
    summaries = {name: rec.summary() for name, rec in results.items()}
    for name, s in summaries.items():
        print(
            f"{name:12} deliveries {s['count']:6d}  p50 {s['p50']:.3f} ms  p99 {s['p99']:.3f} ms  max {s['max']:.2f} ms"
        )
    (_, sa), (_, sb) = summaries.items()
    print(f"B/A: p50 {sb['p50'] / sa['p50']:.2f}x  p99 {sb['p99'] / sa['p99']:.2f}x")


if __name__ == "__main__":
    import uvloop

    sys.exit(uvloop.run(main()))
