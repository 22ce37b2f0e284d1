"""Subscribe: one shared feed, tenant then selector filtering, heartbeats, slow subscribers dropped."""

from __future__ import annotations

import asyncio
import contextlib
import time

import grpc
import pytest
import redis.asyncio as aioredis
import uvloop
from test_selectors import EQ, NE, RE, sel
from tsmesh.v1 import common_pb2, query_pb2
from tsq_support import QUERY_NS, Running

from tsmesh_common.errors import ResourceExhausted, Unauthenticated
from tsmesh_common.leanredis import LeanRedis
from tsmesh_query.config import QueryLimits, SubscribeConfig
from tsmesh_query.live import LiveHub
from tsmesh_query.selectors import parse_selector


def batch(tenant: str, *hosts: str) -> common_pb2.PointBatch:
    return common_pb2.PointBatch(
        tenant_id=tenant,
        points=[
            common_pb2.Point(metric="cpu", labels={"host": h}, timestamp_ns=i, value=i) for i, h in enumerate(hosts)
        ],
        series_ids=list(range(100, 100 + len(hosts))),
        accepted_at_ns=time.time_ns(),
    )


async def next_points(stream) -> common_pb2.PointBatch:
    while True:
        response = await asyncio.wait_for(stream.read(), 5)
        if response.HasField("points"):
            return response.points


async def test_subscribers_get_their_tenants_matching_points_only(
    service: Running, redis_client: aioredis.Redis, tenant_id: str
) -> None:
    other = f"{tenant_id}-other"
    hub = service.components.hub
    await asyncio.wait_for(hub.connected.wait(), 5)
    web = service.stub.Subscribe(
        query_pb2.SubscribeRequest(selector=sel("cpu", ("host", RE, "web-.*"))), metadata=service.md(tenant_id)
    )
    everything = service.stub.Subscribe(query_pb2.SubscribeRequest(selector=sel("cpu")), metadata=service.md(tenant_id))
    first = await asyncio.wait_for(web.read(), 5)
    assert first.HasField("heartbeat")
    await asyncio.wait_for(everything.read(), 5)

    await redis_client.publish(QUERY_NS.live_channel(other), batch(other, "web-1", "web-2").SerializeToString())
    await redis_client.publish(QUERY_NS.live_channel(tenant_id), batch(tenant_id, "db-1", "web-7").SerializeToString())

    got = await next_points(web)
    assert [p.labels["host"] for p in got.points] == ["web-7"]
    assert list(got.series_ids) == [101] and got.tenant_id == tenant_id
    got_all = await next_points(everything)
    assert [p.labels["host"] for p in got_all.points] == ["db-1", "web-7"]

    heartbeat = await asyncio.wait_for(web.read(), 5)  # nothing else for us: a heartbeat comes
    assert heartbeat.HasField("heartbeat")
    web.cancel()
    everything.cancel()


async def test_slow_subscriber_is_dropped_with_resource_exhausted() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=4), QUERY_NS)
    selector = parse_selector(sel("cpu"), QueryLimits())
    stream = hub.stream("t1", selector)
    assert (await anext(stream)).HasField("heartbeat")
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    for _ in range(20):  # the consumer never gets a turn: the queue overflows
        hub.dispatch(QUERY_NS.live_channel("t1"), batch("t1", "a").SerializeToString())
    with pytest.raises(ResourceExhausted, match="subscriber_queue"):
        await pending
    await stream.aclose()
    assert hub.subscriber_count == 0


async def test_subscribe_needs_a_valid_selector(service: Running) -> None:
    stream = service.stub.Subscribe(query_pb2.SubscribeRequest(selector=sel("")), metadata=service.md("t-x"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stream.read()
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_fan_out_reaches_exactly_the_matching_selectors_among_many() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=16), QUERY_NS)
    limits = QueryLimits()
    subs = {m: [hub.open("t1", parse_selector(sel(f"m{m}"), limits)) for _ in range(3)] for m in range(200)}
    only_web = hub.open("t1", parse_selector(sel("m7", ("host", RE, "web-.*")), limits))
    other_tenant = hub.open("t2", parse_selector(sel("m7"), limits))
    published = common_pb2.PointBatch(
        tenant_id="t1",
        points=[
            common_pb2.Point(metric="m7", labels={"host": "web-1"}, timestamp_ns=1, value=1),
            common_pb2.Point(metric="m9", labels={"host": "db-1"}, timestamp_ns=2, value=2),
            common_pb2.Point(metric="m7", labels={"host": "db-2"}, timestamp_ns=3, value=3),
            common_pb2.Point(metric="unwatched", labels={}, timestamp_ns=4, value=4),
        ],
        series_ids=[1, 2, 3, 4],
    )
    hub.dispatch(QUERY_NS.live_channel("t1"), published.SerializeToString())

    def received(sub) -> list[tuple[str, int, int]]:
        out = []
        for response in sub.take():
            out += [
                (p.metric, p.timestamp_ns, sid)
                for p, sid in zip(response.points.points, response.points.series_ids, strict=True)
            ]
        return out

    for m, group in subs.items():
        want = {7: [("m7", 1, 1), ("m7", 3, 3)], 9: [("m9", 2, 2)]}.get(m, [])
        for sub in group:
            assert received(sub) == want
    assert received(only_web) == [("m7", 1, 1)]
    assert received(other_tenant) == []
    for group in subs.values():
        for sub in group:
            hub.close(sub)
    hub.close(only_web)
    hub.close(other_tenant)
    assert hub.subscriber_count == 0


async def test_revoked_token_ends_its_streams_only() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=8), QUERY_NS)
    selector = parse_selector(sel("cpu"), QueryLimits())
    revoked = hub.stream("t1", selector, token_id="tok-a")
    kept = hub.stream("t1", selector, token_id="tok-b")
    assert (await anext(revoked)).HasField("heartbeat")
    assert (await anext(kept)).HasField("heartbeat")
    hub.revoke("tok-a")
    with pytest.raises(Unauthenticated, match="revoked"):
        await anext(revoked)
    hub.dispatch(QUERY_NS.live_channel("t1"), batch("t1", "a").SerializeToString())
    assert (await anext(kept)).HasField("points")
    await kept.aclose()
    assert hub.subscriber_count == 0


def test_heartbeats_go_to_quiet_subscribers_spread_over_the_period() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(heartbeat_s=0.5), QUERY_NS)  # 5 ticks of 0.1 s per period
    busy = hub.open("t1", parse_selector(sel("cpu"), QueryLimits()))
    quiet = [hub.open("t1", parse_selector(sel("mem"), QueryLimits())) for _ in range(9)]
    beating: list[int] = []
    for _ in range(5):  # one period: every quiet one beats once, a fifth of them per tick
        hub.dispatch(QUERY_NS.live_channel("t1"), batch("t1", "a").SerializeToString())
        assert busy.take()  # points went out: no heartbeat needed
        hub.wheel.tick()
        beating.append(sum(sub.beat for sub in quiet))
    steps = [b - a for a, b in zip([0, *beating], beating, strict=False)]
    assert beating[-1] == 9 and all(1 <= step <= 2 for step in steps), beating
    assert not busy.beat
    assert [r.HasField("heartbeat") for r in quiet[0].take()] == [True]
    for _ in range(5):  # a heartbeat is not activity: a quiet stream beats every period
        hub.wheel.tick()
    assert quiet[0].beat


def test_a_stream_is_never_quiet_for_more_than_a_period() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(heartbeat_s=0.5), QUERY_NS)
    sub = hub.open("t1", parse_selector(sel("cpu"), QueryLimits()))
    for sent_at in range(5):  # whichever tick of the period its last points went out at
        for _ in range(sent_at):
            hub.wheel.tick()
        sub.take()  # clear any heartbeat so far
        hub.dispatch(QUERY_NS.live_channel("t1"), batch("t1", "a").SerializeToString())
        assert sub.take()
        ticks = 0
        while not sub.beat:
            hub.wheel.tick()
            ticks += 1
        assert ticks == 5, (sent_at, ticks)  # exactly one period after its last points


async def test_stream_ends_when_its_token_expires() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=8), QUERY_NS)
    stream = hub.stream("t1", parse_selector(sel("cpu"), QueryLimits()), token_id="t", expires_at=time.time() + 0.2)
    assert (await anext(stream)).HasField("heartbeat")
    with pytest.raises(Unauthenticated, match="expired"):
        await asyncio.wait_for(anext(stream), 5)
    assert hub.subscriber_count == 0


def test_one_tenant_cannot_take_every_slot() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(max_subscribers=10, max_subscribers_per_tenant=2), QUERY_NS)
    selector = parse_selector(sel("cpu"), QueryLimits())
    hub.open("greedy", selector)
    hub.open("greedy", selector)
    with pytest.raises(ResourceExhausted, match="max_subscribers_per_tenant"):
        hub.open("greedy", selector)
    assert hub.open("other", selector).tenant == "other"


async def test_equality_index_finds_one_selector_among_many_on_a_metric() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=16), QUERY_NS)
    limits = QueryLimits()
    by_host = {h: hub.open("t1", parse_selector(sel("cpu", ("host", EQ, f"h{h}")), limits)) for h in range(1000)}
    two_labels = hub.open("t1", parse_selector(sel("cpu", ("dc", EQ, "eu"), ("host", EQ, "h7")), limits))
    not_h7 = hub.open("t1", parse_selector(sel("cpu", ("host", NE, "h7")), limits))
    regex = hub.open("t1", parse_selector(sel("cpu", ("host", RE, "h7|h8")), limits))
    published = common_pb2.PointBatch(
        tenant_id="t1",
        points=[
            common_pb2.Point(metric="cpu", labels={"host": "h7", "dc": "eu"}, timestamp_ns=1, value=1),
            common_pb2.Point(metric="cpu", labels={"host": "h8"}, timestamp_ns=2, value=2),
            common_pb2.Point(metric="cpu", labels={"dc": "eu"}, timestamp_ns=3, value=3),
        ],
    )
    hub.dispatch(QUERY_NS.live_channel("t1"), published.SerializeToString())

    def stamps(sub) -> list[int]:
        return [p.timestamp_ns for r in sub.take() for p in r.points.points]

    assert {h: stamps(s) for h, s in by_host.items() if s.batches} == {7: [1], 8: [2]}
    assert stamps(two_labels) == [1]
    assert stamps(not_h7) == [2, 3]
    assert stamps(regex) == [1, 2]
    for sub in [*by_host.values(), two_labels, not_h7, regex]:
        hub.close(sub)
    assert hub.subscriber_count == 0 and not hub._index


async def test_batches_waiting_for_a_stream_go_out_as_one_response() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=8), QUERY_NS)
    stream = hub.stream("t1", parse_selector(sel("cpu"), QueryLimits()))
    assert (await anext(stream)).HasField("heartbeat")
    first, second = batch("t1", "a", "b"), batch("t1", "c")
    second.accepted_at_ns = first.accepted_at_ns + 5
    hub.dispatch(QUERY_NS.live_channel("t1"), first.SerializeToString())
    hub.dispatch(QUERY_NS.live_channel("t1"), second.SerializeToString())  # before the stream had a turn
    merged = (await anext(stream)).points
    assert [p.labels["host"] for p in merged.points] == ["a", "b", "c"]
    assert list(merged.series_ids) == [100, 101, 100]
    assert merged.accepted_at_ns == first.accepted_at_ns and merged.tenant_id == "t1"
    await stream.aclose()


async def test_feed_through_redis_py_when_the_url_is_not_plain_tcp(redis_client: aioredis.Redis) -> None:
    no_lean_client = LeanRedis.from_url("rediss://127.0.0.1:6379")
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(), QUERY_NS, no_lean_client)
    follower = asyncio.create_task(hub.follow())
    try:
        await asyncio.wait_for(hub.connected.wait(), 5)
        stream = hub.stream("t-py", parse_selector(sel("cpu"), QueryLimits()))
        assert (await anext(stream)).HasField("heartbeat")
        await redis_client.publish(QUERY_NS.live_channel("t-py"), batch("t-py", "x").SerializeToString())
        got = await asyncio.wait_for(anext(stream), 5)
        assert [p.labels["host"] for p in got.points.points] == ["x"]
        await stream.aclose()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower


def test_lean_feed_runs_on_uvloop() -> None:
    """The service runs on uvloop, whose transports are not asyncio.Transport subclasses."""

    async def scenario() -> list[str]:
        hub = LiveHub(aioredis.Redis(), SubscribeConfig(), QUERY_NS, LeanRedis("127.0.0.1", 6379))
        follower = asyncio.create_task(hub.follow())
        publisher = aioredis.Redis()
        try:
            await asyncio.wait_for(hub.connected.wait(), 5)
            stream = hub.stream("t-uv", parse_selector(sel("cpu"), QueryLimits()))
            await anext(stream)
            await publisher.publish(QUERY_NS.live_channel("t-uv"), batch("t-uv", "u").SerializeToString())
            got = await asyncio.wait_for(anext(stream), 5)
            await stream.aclose()
            return [p.labels["host"] for p in got.points.points]
        finally:
            await publisher.aclose()
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower

    assert uvloop.run(scenario()) == ["u"]
