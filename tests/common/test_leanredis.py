"""``tsmesh_common.leanredis`` subscriptions against the real Redis: SUBSCRIBE and PSUBSCRIBE hand
each message to the callback, and ``on_lost`` is called when the connection goes."""

from __future__ import annotations

import asyncio
import uuid

import redis.asyncio as aioredis
from testkit import REDIS_URL, eventually

from tsmesh_common.leanredis import LeanRedis


async def test_psubscribe_delivers_channel_and_data_of_every_match(redis_client: aioredis.Redis) -> None:
    lean = LeanRedis.from_url(REDIS_URL)
    assert lean is not None
    prefix = f"lean-{uuid.uuid4().hex[:8]}"
    got: list[tuple[bytes, bytes]] = []
    lost: list[bool] = []
    subscription = await lean.psubscribe(f"{prefix}:*", lambda c, d: got.append((c, d)), lambda: lost.append(True))
    await redis_client.publish(f"{prefix}:a", b"1")
    await redis_client.publish(f"other-{prefix}:b", b"not matched")
    await redis_client.publish(f"{prefix}:b", b"\x00\xff")
    await eventually(lambda: len(got) == 2)
    assert got == [(f"{prefix}:a".encode(), b"1"), (f"{prefix}:b".encode(), b"\x00\xff")]
    await subscription.ping()
    subscription.close()
    await asyncio.wait_for(subscription.lost, 5)
    assert lost == [True]
    await lean.aclose()


async def test_subscribe_still_delivers_data_only(redis_client: aioredis.Redis) -> None:
    lean = LeanRedis.from_url(REDIS_URL)
    assert lean is not None
    channel = f"lean-{uuid.uuid4().hex[:8]}"
    got: list[bytes] = []
    subscription = await lean.subscribe(channel, got.append, lambda: None)
    await redis_client.publish(channel, b"x")
    await eventually(lambda: got == [b"x"])
    subscription.close()
    await lean.aclose()
