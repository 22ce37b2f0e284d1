"""The generation feed (ADR 0406): the micro-cache's local copy of tenants' data generations, kept
current by the announcements of the generation scripts, and emptied whenever its subscription fails."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from testkit import eventually, fresh_namespace

from tsmesh_common.leanredis import LeanRedis
from tsmesh_gateway.generation_feed import FEED_NAME, GenerationFeed

NS = fresh_namespace()

RANGE = {"selector": {"metric": "cpu"}, "start_ns": 0, "end_ns": 10**12, "step_ns": 10**9}


class FakeSubscription:
    def __init__(self, on_lost: Callable[[], None]) -> None:
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_lost = on_lost
        self.silent = False
        self.pings = 0

    async def ping(self) -> None:
        if self.silent:
            await asyncio.Event().wait()
        self.pings += 1

    def close(self) -> None:  # also what the connection going away looks like
        if not self.lost.done():
            self.lost.set_result(None)
            self._on_lost()


class FakeRedis:
    """Subscriptions handed out in order; ``deliver`` plays a message on the newest one."""

    def __init__(self) -> None:
        self.subscriptions: list[FakeSubscription] = []
        self.channels: list[str] = []
        self._on_message: Callable[[bytes], None] | None = None

    async def subscribe(
        self, channel: str, on_message: Callable[[bytes], None], on_lost: Callable[[], None]
    ) -> FakeSubscription:
        self.channels.append(channel)
        self._on_message = on_message
        self.subscriptions.append(FakeSubscription(on_lost))
        return self.subscriptions[-1]

    def deliver(self, data: bytes) -> None:
        assert self._on_message is not None
        self._on_message(data)


@contextlib.asynccontextmanager
async def following(**settings: float) -> AsyncIterator[tuple[FakeRedis, GenerationFeed]]:
    """A feed over a :class:`FakeRedis`, running (subscribed) inside the block, stopped after it."""
    redis = FakeRedis()
    feed = GenerationFeed(redis.subscribe, NS, **settings)  # type: ignore[arg-type]
    task = asyncio.create_task(feed.run())
    try:
        await eventually(lambda: feed.up, timeout=2.0, interval=0.001)
        yield redis, feed
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_follows_the_announcements_of_the_tenants_it_was_asked_about_only() -> None:
    async with following() as (redis, feed):
        assert redis.channels == [NS.generation_channel]
        assert feed.current("t1") is None  # never read: the caller reads Redis
        feed.learn("t1", 5, feed.track("t1"))
        assert feed.current("t1") == 5
        redis.deliver(b"7 " + NS.data_generation_key("t1").encode())
        assert feed.current("t1") == 7
        redis.deliver(b"9 " + NS.data_generation_key("t2").encode())  # nobody asked for t2 here
        redis.deliver(b"11 " + NS.late_generation_key("t1").encode())  # not the data generation
        redis.deliver(b"junk " + NS.data_generation_key("t1").encode())
        redis.deliver(b"")
        assert feed.current("t2") is None and feed.current("t1") == 7
        redis.deliver(b"6 " + NS.data_generation_key("t1").encode())  # values only grow
        assert feed.current("t1") == 7


async def test_an_announcement_that_overtakes_the_read_is_kept() -> None:
    async with following() as (redis, feed):
        epoch = feed.track("t1")  # the read is on its way
        redis.deliver(b"8 " + NS.data_generation_key("t1").encode())  # a bump after Redis answered the read
        feed.learn("t1", 5, epoch)  # the read's (older) reply arrives last
        assert feed.current("t1") == 8


async def test_a_lost_subscription_empties_the_copy_and_reads_from_before_it_are_not_kept() -> None:
    async with following() as (redis, feed):
        feed.learn("t1", 5, feed.track("t1"))
        pending = feed.track("t2")
        redis.subscriptions[-1].close()  # the connection goes: a bump may be missed from now on
        assert not feed.up and feed.current("t1") is None
        await eventually(lambda: feed.up, timeout=2.0, interval=0.001)
        assert len(redis.subscriptions) == 2
        feed.learn("t2", 9, pending)  # read before the loss: it may predate a missed bump
        assert feed.current("t2") is None and feed.current("t1") is None
        feed.learn("t2", 10, feed.track("t2"))
        assert feed.current("t2") == 10


async def test_nothing_is_kept_while_no_subscription_is_up() -> None:
    redis = FakeRedis()
    feed = GenerationFeed(redis.subscribe, NS)
    feed.learn("t1", 5, feed.track("t1"))
    assert not feed.up and feed.current("t1") is None


async def test_a_connection_that_stops_answering_is_replaced() -> None:
    async with following(ping_seconds=0.01, ping_timeout=0.05) as (redis, feed):
        feed.learn("t1", 5, feed.track("t1"))
        await eventually(lambda: redis.subscriptions[0].pings >= 2, timeout=2.0, interval=0.005)
        redis.subscriptions[0].silent = True  # half-open: no error, just no answers
        await eventually(lambda: len(redis.subscriptions) == 2 and feed.up, timeout=2.0, interval=0.005)
        assert redis.subscriptions[0].lost.done() and feed.current("t1") is None


async def test_the_copy_is_bounded() -> None:
    async with following(max_tenants=3) as (_, feed):
        for tenant in ("a", "b", "c", "d"):
            feed.learn(tenant, 1, feed.track(tenant))
        assert [feed.current(t) for t in ("a", "b", "c", "d")] == [None, None, None, 1]
        late = feed.track("x")  # a read of x is on its way ...
        feed.track("y")
        feed.track("z")  # ... when the copy fills up and is emptied
        feed.track("x")  # x is asked for again
        feed.learn("x", 5, late)  # the first read's reply predates announcements the copy forgot
        assert feed.current("x") is None


async def test_the_scripts_announce_every_value_they_set(redis_client: aioredis.Redis) -> None:
    tenant = f"t-{uuid.uuid4().hex}"
    key = NS.data_generation_key(tenant)
    seen: list[bytes] = []
    lost: list[bool] = []
    lean = LeanRedis.from_url("redis://127.0.0.1:6379/0")
    assert lean is not None
    subscription = await lean.subscribe(NS.generation_channel, seen.append, lambda: lost.append(True))
    try:
        bumped = await redis_client.eval(NS.bump_generation_lua, 1, key)
        await redis_client.delete(key)
        (initialised,) = await redis_client.eval(NS.init_generations_lua, 1, key)
        await redis_client.eval(NS.init_generations_lua, 1, key)  # already set: nothing to announce
        await subscription.ping()  # the pong follows every message published before it
        mine = [m for m in seen if m.endswith(key.encode())]
        assert mine == [b"%d %s" % (bumped, key.encode()), initialised + b" " + key.encode()]
        assert mine[1].partition(b" ")[0] == await redis_client.get(key)  # announced as GET reads it
        assert int(initialised) > bumped
    finally:
        subscription.close()
        await lean.aclose()
        await redis_client.delete(key)
    await eventually(lambda: lost == [True], timeout=2.0)


@pytest.mark.parametrize("fast", ["true", "false"], ids=["fast-path", "starlette"])
async def test_hits_read_no_redis_while_the_feed_is_up_and_a_bump_still_misses(
    gateway_factory: Any, mesh: Any, redis_client: aioredis.Redis, fast: str
) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_FAST_PATH=fast)
    cache = gw.app.state.deps.cache
    reader = cache._generations
    auth = gw.bearer("read")
    await eventually(lambda: cache.feed.up, timeout=5.0)
    try:
        first = await gw.client.post("/v1/query/range", json=RANGE, headers=auth)
        assert first.headers["x-cache"] == "miss"  # the first read of this tenant goes to Redis
        reads = reader.fetches
        for _ in range(20):
            hit = await gw.client.post("/v1/query/range", json=RANGE, headers=auth)
            assert hit.headers["x-cache"] == "hit" and hit.json() == first.json()
        assert reader.fetches == reads  # served from the feed's copy
        calls = mesh.query.calls["QueryRange"]

        await gw.bump_generation(redis_client)
        after = await gw.client.post("/v1/query/range", json=RANGE, headers=auth)
        assert after.headers["x-cache"] == "miss" and mesh.query.calls["QueryRange"] == calls + 1
        assert reader.fetches == reads  # the bump arrived as an announcement, not a read

        # the subscription killed at the server: the copy is dropped at once, reads go to Redis
        killed = 0
        for client in await redis_client.client_list():
            if client.get("name") == FEED_NAME:
                killed += await redis_client.execute_command("CLIENT", "KILL", "ID", client["id"])
        assert killed >= 1
        await eventually(lambda: not cache.feed.up or cache.current(gw.tenant) is None, timeout=2.0, interval=0.001)
        await redis_client.eval(
            gw.ns.bump_generation_lua, 1, gw.ns.data_generation_key(gw.tenant)
        )  # missed by the feed
        missed = await gw.client.post("/v1/query/range", json=RANGE, headers=auth)
        assert missed.headers["x-cache"] == "miss" and reader.fetches > reads
        await eventually(lambda: cache.feed.up, timeout=5.0)
        assert (await gw.client.post("/v1/query/range", json=RANGE, headers=auth)).headers["x-cache"] == "hit"
    finally:
        await redis_client.delete(gw.ns.data_generation_key(gw.tenant))
