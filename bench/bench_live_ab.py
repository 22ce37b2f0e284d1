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
import inspect
import sys
import time
import uuid
from typing import Any

from harness import LatencyRecorder, module_at
from redis.asyncio import Redis
from throwaway import fresh_redis_namespace
from tsmesh.v1 import common_pb2

from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_query import live
from tsmesh_query.config import QueryLimits, SubscribeConfig
from tsmesh_query.selectors import parse_selector

NS = RedisNamespace(fresh_redis_namespace("live-ab"))  # this run's channels only
REDIS_URL = "redis://127.0.0.1:6379/0"


def hub_of(module: Any) -> Any:
    """``module.LiveHub`` on this run's namespace, with a lean client where that version takes one
    (older versions had no namespace: they follow the default names)."""
    parameters = inspect.signature(module.LiveHub).parameters
    extra: dict[str, Any] = {}
    if "namespace" in parameters:
        extra["namespace"] = NS
    if "lean" in parameters:
        extra["lean"] = LeanRedis.from_url(REDIS_URL)
    return module.LiveHub(Redis.from_url(REDIS_URL), SubscribeConfig(), **extra)


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
        await publisher.publish(NS.live_channel(tenant), batch.SerializeToString())
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
    baseline = module_at(args.ref, "services/query/src/tsmesh_query/live.py", "tsmesh_query.live_baseline")
    publisher = Redis.from_url(REDIS_URL)
    sides = {
        f"A {args.ref}": lambda: hub_of(baseline),
        "B branch": lambda: hub_of(live),
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
