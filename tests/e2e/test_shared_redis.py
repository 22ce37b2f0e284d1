"""Two deployments on one Redis share nothing (issue 17 item 9, ADR 0011).

- In process, with the SAME tenant id in both namespaces: a login throttle, generation bumps and
  live points of one namespace are not seen by the other's throttle, generation feed, generation
  reader or live hub.
- Two real private stacks (``scripts/devstack.py``) on one private redis-server, both with the same
  demo tenant and admin e-mail: wrong passwords that lock the address out of stack A leave stack B's
  login open (before namespaces, B answered 429 for 15 minutes), each stack's live points reach its
  own sockets only, and every key, channel and pattern either stack touched (MONITOR) is under its
  own namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
import redis.asyncio as aioredis
import websockets
from devstack import DEMO_EMAIL, DEMO_TENANT, Stack
from redis.exceptions import RedisError
from stack_config import drop_database, private_config
from testkit import REDIS_URL, eventually, fresh_namespace
from throwaway import ThrowawayRedis
from tsmesh.v1 import common_pb2

from tsmesh_auth.throttle import LoginThrottle, ThrottlePolicy
from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.errors import ResourceExhausted
from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_gateway.generation_feed import GenerationFeed
from tsmesh_gateway.microcache import GenerationReader as GatewayGenerationReader
from tsmesh_ingest.live import LivePublisher
from tsmesh_query.config import QueryLimits, SubscribeConfig
from tsmesh_query.generation import GenerationReader as QueryGenerationReader
from tsmesh_query.live import LiveHub
from tsmesh_query.selectors import parse_selector

TENANT = "t-shared-by-both"  # the same tenant id in both deployments


def _batch(value: float) -> bytes:
    point = common_pb2.Point(metric="cpu", labels={"host": "a"}, timestamp_ns=time.time_ns(), value=value)
    return common_pb2.PointBatch(
        tenant_id=TENANT, points=[point], series_ids=[1], accepted_at_ns=time.time_ns()
    ).SerializeToString()


@contextlib.asynccontextmanager
async def _live_stream(ns: RedisNamespace) -> AsyncIterator[AsyncIterator[Any]]:
    """A query live hub of ``ns`` following the shared Redis, and one subscription to ``cpu`` of TENANT."""
    client = aioredis.Redis.from_url(REDIS_URL)
    hub = LiveHub(client, SubscribeConfig(heartbeat_s=60), ns)
    follower = asyncio.create_task(hub.follow())
    stream = hub.stream(TENANT, parse_selector(common_pb2.Selector(metric="cpu"), QueryLimits()))
    try:
        await asyncio.wait_for(hub.connected.wait(), 10)
        assert (await anext(stream)).HasField("heartbeat")
        yield stream
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        await client.aclose()


async def _next_values(stream: AsyncIterator[Any]) -> list[float]:
    while True:
        response = await asyncio.wait_for(anext(stream), 10)
        if response.HasField("points"):
            return [p.value for p in response.points.points]


async def test_throttles_generations_and_live_points_of_one_namespace_are_not_heard_by_another(
    redis_client: aioredis.Redis,
) -> None:
    a, b = fresh_namespace(), fresh_namespace()

    # login throttle: the same identity from the same address, locked out in a only
    policy = ThrottlePolicy(free_per_account_address=2, base_delay_seconds=600.0, max_delay_seconds=900.0)
    throttle_a, throttle_b = LoginThrottle(redis_client, policy, a), LoginThrottle(redis_client, policy, b)
    attempt_a, attempt_b = (
        throttle_a.attempt("demo\x00admin", "127.0.0.1"),
        throttle_b.attempt("demo\x00admin", "127.0.0.1"),
    )
    for _ in range(2):
        await throttle_a.reserve(attempt_a)
    with pytest.raises(ResourceExhausted):
        await throttle_a.reserve(attempt_a)
    await throttle_b.reserve(attempt_b)  # b's budget is untouched
    await throttle_b.succeeded(attempt_b)

    # live points: a's publisher is heard by a's hub only
    async with _live_stream(a) as stream_a, _live_stream(b) as stream_b:
        publisher_a, publisher_b = LivePublisher(redis_client, a), LivePublisher(redis_client, b)
        publisher_a.publish(TENANT, [_batch(1.0)])
        await publisher_a.drain()
        publisher_b.publish(TENANT, [_batch(2.0)])  # published after a's: b would have heard a's first
        await publisher_b.drain()
        assert await _next_values(stream_b) == [2.0]
        assert await _next_values(stream_a) == [1.0]

    # generations: a bump in a moves neither b's keys nor b's gateway feed
    lean = LeanRedis.from_url(REDIS_URL)
    assert lean is not None
    feed_b = GenerationFeed(lambda channel, on_message, on_lost: lean.subscribe(channel, on_message, on_lost), b)
    running = asyncio.create_task(feed_b.run())
    query_b = QueryGenerationReader(
        aioredis.Redis.from_url(REDIS_URL), CircuitBreaker("test", failures=(RedisError, OSError)), b
    )
    try:
        await eventually(lambda: feed_b.up, timeout=10)
        reader_b = GatewayGenerationReader(lean, b)
        tokens = {t: feed_b.track(t) for t in (TENANT, "t-marker")}
        values = {t: int(await reader_b.read(t)) for t in tokens}  # type: ignore[arg-type]
        for tenant, value in values.items():
            feed_b.learn(tenant, value, tokens[tenant])
        bumped_a = int(await redis_client.eval(a.bump_generation_lua, 1, a.data_generation_key(TENANT)))
        assert bumped_a > values[TENANT]
        marker = int(await redis_client.eval(b.bump_generation_lua, 1, b.data_generation_key("t-marker")))
        await eventually(lambda: feed_b.current("t-marker") == marker, timeout=10, interval=0.005)
        assert feed_b.current(TENANT) == values[TENANT]  # a's announcement, sent before b's marker, not heard
        generations = await query_b.get(TENANT)
        assert generations is not None and generations.data == values[TENANT]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await query_b.close()
        await lean.aclose()
        for ns in (a, b):
            keys = [key async for key in redis_client.scan_iter(match=f"{ns.prefix}*", count=1000)]
            if keys:
                await redis_client.delete(*keys)


# -- two real stacks ---------------------------------------------------------------------------------


@pytest.fixture
def two_stacks(tmp_path: Path) -> Iterator[tuple[list[Stack], Monitor]]:
    """Two private stacks on one redis-server of the test's own, which MONITOR watches from the start
    (so it sees the two stacks and nothing else)."""
    server = ThrowawayRedis()
    monitor = Monitor(server.port)
    configs = [private_config(tmp_path / name, redis_url=server.url) for name in ("a", "b")]
    stacks: list[Stack] = []
    try:
        for cfg in configs:
            stacks.append(Stack(cfg, out=io.StringIO()))
            stacks[-1].start()
        yield stacks, monitor
    finally:
        for stack in stacks:
            stack.stop()
        monitor.close()
        server.stop()
        for cfg in configs:
            drop_database(cfg.database)


_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')


class Monitor:
    """Every command the Redis server runs (MONITOR on a plain socket), as argument lists, collected
    by a thread."""

    def __init__(self, port: int) -> None:
        self.client = redis.Redis(port=port)
        self.commands: list[list[str]] = []
        self._sock = socket.create_connection(("127.0.0.1", port))
        self._sock.sendall(b"MONITOR\r\n")
        self._lines = self._sock.makefile("rb")
        assert self._lines.readline() == b"+OK\r\n"
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # ends when the socket is closed
            for line in self._lines:
                text = line.decode("utf-8", "replace")
                self.commands.append(_ARG.findall(text.partition("] ")[2]))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(10)
        self._lines.close()
        self._sock.close()
        self.client.close()


# Commands whose first argument is a key or a channel (a pattern for PSUBSCRIBE); EVAL/EVALSHA name
# their keys after the script and the key count.
_FIRST_IS_NAME = {"GET", "SET", "INCR", "ZADD", "ZCARD", "ZCOUNT", "ZREMRANGEBYSCORE", "HMGET", "HSET", "HINCRBY",
                  "EXPIRE", "PUBLISH", "HGET", "HEXISTS", "ZSCORE"}  # fmt: skip
_ALL_ARE_NAMES = {"MGET", "DEL", "SUBSCRIBE", "PSUBSCRIBE"}


def names_touched(args: list[str]) -> list[str]:
    """The keys and channels one MONITOR command names."""
    if not args:
        return []
    verb, rest = args[0].upper(), args[1:]
    if verb in ("EVAL", "EVALSHA") and len(rest) >= 2:
        return rest[2 : 2 + int(rest[1])]
    if verb in _ALL_ARE_NAMES:
        return rest
    if verb in _FIRST_IS_NAME:
        return rest[:1]
    return []


async def _login(http: httpx.AsyncClient, password: str) -> httpx.Response:
    return await http.post("/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": password})


async def _subscribe(stack: Stack, metric: str) -> websockets.ClientConnection:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as http:
        login = await _login(http, stack.admin_password or "")
        assert login.status_code == 200, login.text
    ws = await websockets.connect(
        stack.gateway_url.replace("http", "ws") + "/v1/stream",
        subprotocols=["tsmesh.json.v1"],
        additional_headers={"Authorization": f"Bearer {login.json()['access_token']}"},
    )
    await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "selector": {"metric": metric}}).decode())
    assert orjson.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "ack"
    return ws


async def _write(stack: Stack, metric: str, value: float) -> None:
    assert stack.token is not None
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as http:
        point = {"metric": metric, "labels": {}, "timestamp_ns": time.time_ns(), "value": value}
        written = await http.post(
            "/v1/write", json={"points": [point]}, headers={"Authorization": f"Bearer {stack.token}"}
        )
        assert written.status_code == 200, written.text


async def _first_points(ws: websockets.ClientConnection) -> list[float]:
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), 20))
        if frame["type"] == "points":
            return [p["value"] for p in frame["points"]]


@pytest.mark.e2e
async def test_two_stacks_on_one_redis_share_nothing(two_stacks: tuple[list[Stack], Monitor]) -> None:
    (a, b), monitor = two_stacks
    prefixes = [f"{stack.cfg.redis_namespace}:" for stack in (a, b)]
    assert prefixes[0] != prefixes[1]
    ws_a, ws_b = await _subscribe(a, "shared"), await _subscribe(b, "shared")

    # wrong passwords from 127.0.0.1 until stack A refuses the address; B still logs in
    async with httpx.AsyncClient(base_url=a.gateway_url, timeout=30) as http:
        statuses = [(await _login(http, "wrong-password")).status_code for _ in range(6)]
        while statuses[-1] != 429 and len(statuses) < 40:
            statuses.append((await _login(http, "wrong-password")).status_code)
    assert statuses[-1] == 429 and set(statuses[:-1]) <= {401, 429}, statuses
    async with httpx.AsyncClient(base_url=b.gateway_url, timeout=30) as http:
        answer = await _login(http, b.admin_password or "")
    assert answer.status_code == 200, answer.text

    # each stack's live points reach its own sockets only
    await _write(a, "shared", 1.0)
    assert await _first_points(ws_a) == [1.0]
    await _write(b, "shared", 2.0)  # B's socket would have got A's point first
    assert await _first_points(ws_b) == [2.0]
    await ws_a.close()
    await ws_b.close()
    # both writers committed and bumped their tenant's generation
    await eventually(lambda: all(any(monitor.client.scan_iter(match=f"{p}gen:*")) for p in prefixes), timeout=30)

    keys = [k.decode() for k in monitor.client.scan_iter(count=1000)]
    channels = [c.decode() for c in monitor.client.pubsub_channels()]

    def own(name: str) -> bool:
        return any(name.startswith(prefix) for prefix in prefixes)

    assert keys and all(own(k) for k in keys), [k for k in keys if not own(k)]
    assert channels and all(own(c) for c in channels), [c for c in channels if not own(c)]
    touched = [name for command in list(monitor.commands) for name in names_touched(command)]
    strangers = sorted({name for name in touched if not own(name)})
    assert not strangers, strangers
    for prefix in prefixes:  # both stacks used Redis for every part: live, generations, throttle, limits
        parts = {name[len(prefix) :].split(":")[0] for name in touched if name.startswith(prefix)}
        assert {"live", "generations", "gen", "auth", "gw"} <= parts, (prefix, parts)
