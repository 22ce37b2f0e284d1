"""The generation reader: concurrent reads share one in-flight MGET, never one sent before they arrived."""

from __future__ import annotations

import asyncio
import socket
import uuid

import pytest

from tsmesh_common.redis_keys import data_generation_key
from tsmesh_gateway.leanredis import LeanRedis
from tsmesh_gateway.microcache import GenerationReader


class GatedRedis:
    """Answers GET/MGET from a dict snapshot taken when the command is SENT, released by a gate."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.sent: list[list[str]] = []
        self.gate = asyncio.Event()

    async def get(self, key: str) -> bytes | None:
        return (await self.mget([key]))[0]

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        snapshot = [self.values.get(k) for k in keys]
        self.sent.append(list(keys))
        await self.gate.wait()
        return snapshot

    async def eval(self, script: str, numkeys: int, *keys: str) -> list[bytes]:
        """``INIT_GENERATIONS_LUA``: missing keys are set (to 100 here), then read."""
        self.sent.append(["EVAL", *keys])
        return [self.values.setdefault(k, b"100") for k in keys]


async def test_reads_arriving_during_a_fetch_join_the_next_one_and_see_the_bump() -> None:
    redis = GatedRedis()
    reader = GenerationReader(redis)
    redis.values[data_generation_key("t1")] = b"1"
    first = [asyncio.ensure_future(reader.read("t1")) for _ in range(3)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(redis.sent) == 1  # three concurrent reads, one command
    redis.values[data_generation_key("t1")] = b"2"  # the writer bumps while the first read is in flight
    later = [asyncio.ensure_future(reader.read("t1")), asyncio.ensure_future(reader.read("t2"))]
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(redis.sent) == 1  # they wait: the in-flight read was sent before they arrived
    redis.gate.set()
    assert await asyncio.gather(*first) == [b"1", b"1", b"1"]
    assert await asyncio.gather(*later) == [b"2", b"100"]  # t2 was missing: set, never read as a constant
    assert redis.sent[1:] == [
        [data_generation_key("t1"), data_generation_key("t2")],
        ["EVAL", data_generation_key("t2")],
    ]
    assert reader.fetches == 2


async def test_a_failed_fetch_fails_its_waiters_only(redis_client) -> None:
    class Broken:
        async def get(self, key: str) -> bytes | None:
            raise ConnectionError("down")

    reader = GenerationReader(Broken())
    results = await asyncio.gather(reader.read("t"), reader.read("t"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    tenant = f"t-{uuid.uuid4().hex}"
    await redis_client.set(data_generation_key(tenant), 7)
    real = GenerationReader(redis_client)
    seven, fresh = await asyncio.gather(real.read(tenant), real.read(f"{tenant}-x"))
    assert seven == b"7" and fresh == await redis_client.get(data_generation_key(f"{tenant}-x"))
    await redis_client.delete(data_generation_key(tenant), data_generation_key(f"{tenant}-x"))


async def test_lean_redis_reads_pipelines_reconnects_and_fails_fast(redis_client) -> None:
    tenant = f"t-{uuid.uuid4().hex}"
    key = data_generation_key(tenant)
    await redis_client.set(key, 41)
    lean = LeanRedis.from_url("redis://127.0.0.1:6379/0")
    assert lean is not None
    try:
        assert await lean.get(key) == b"41"
        assert await asyncio.gather(lean.mget([key, key + "-none"]), lean.get(key)) == [[b"41", None], b"41"]
        with pytest.raises(Exception, match=r"WRONGTYPE"):
            await redis_client.rpush(key + "-list", "x")
            await lean.get(key + "-list")
        assert lean._protocol is not None and lean._protocol.transport is not None
        lean._protocol.transport.close()  # the next call opens a new connection
        await asyncio.sleep(0.01)
        await redis_client.incr(key)
        reader = GenerationReader(lean)
        assert await reader.read(tenant) == b"42"
    finally:
        await lean.aclose()
        await redis_client.delete(key, key + "-list")
    assert LeanRedis.from_url("rediss://127.0.0.1:6379/0") is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = LeanRedis("127.0.0.1", port)
    with pytest.raises(OSError):
        await down.get("k")
