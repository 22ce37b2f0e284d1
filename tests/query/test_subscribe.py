"""Subscribe: one shared feed, tenant then selector filtering, heartbeats, slow subscribers dropped."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest
import redis.asyncio as aioredis
from test_selectors import RE, sel
from tsmesh.v1 import common_pb2, query_pb2
from tsq_support import Running

from tsmesh_common.errors import ResourceExhausted, Unauthenticated
from tsmesh_common.redis_keys import live_channel
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

    await redis_client.publish(live_channel(other), batch(other, "web-1", "web-2").SerializeToString())
    await redis_client.publish(live_channel(tenant_id), batch(tenant_id, "db-1", "web-7").SerializeToString())

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
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=4))
    selector = parse_selector(sel("cpu"), QueryLimits())
    stream = hub.stream("t1", selector)
    assert (await anext(stream)).HasField("heartbeat")
    pending = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0)
    for _ in range(20):  # the consumer never gets a turn: the queue overflows
        hub.dispatch(live_channel("t1"), batch("t1", "a").SerializeToString())
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
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=16))
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
    hub.dispatch(live_channel("t1"), published.SerializeToString())

    def received(sub) -> list[tuple[str, int, int]]:
        out = []
        while not sub.queue.empty():
            response = sub.queue.get_nowait()
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
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=8))
    selector = parse_selector(sel("cpu"), QueryLimits())
    revoked = hub.stream("t1", selector, token_id="tok-a")
    kept = hub.stream("t1", selector, token_id="tok-b")
    assert (await anext(revoked)).HasField("heartbeat")
    assert (await anext(kept)).HasField("heartbeat")
    hub.revoke("tok-a")
    with pytest.raises(Unauthenticated, match="revoked"):
        await anext(revoked)
    hub.dispatch(live_channel("t1"), batch("t1", "a").SerializeToString())
    assert (await anext(kept)).HasField("points")
    await kept.aclose()
    assert hub.subscriber_count == 0


async def test_stream_ends_when_its_token_expires() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(queue_size=8))
    stream = hub.stream("t1", parse_selector(sel("cpu"), QueryLimits()), token_id="t", expires_at=time.time() + 0.2)
    assert (await anext(stream)).HasField("heartbeat")
    with pytest.raises(Unauthenticated, match="expired"):
        await asyncio.wait_for(anext(stream), 5)
    assert hub.subscriber_count == 0


def test_one_tenant_cannot_take_every_slot() -> None:
    hub = LiveHub(aioredis.Redis(), SubscribeConfig(max_subscribers=10, max_subscribers_per_tenant=2))
    selector = parse_selector(sel("cpu"), QueryLimits())
    hub.open("greedy", selector)
    hub.open("greedy", selector)
    with pytest.raises(ResourceExhausted, match="max_subscribers_per_tenant"):
        hub.open("greedy", selector)
    assert hub.open("other", selector).tenant == "other"
