"""The generation reader (concurrent reads share one in-flight MGET, never one sent before they
arrived) and the micro-cache's byte accounting and gzipped answers."""

from __future__ import annotations

import asyncio
import gc
import gzip
import os
import socket
import tracemalloc
import uuid

import orjson
import pytest
from testkit import fresh_namespace

from tsmesh_common.leanredis import LeanRedis
from tsmesh_gateway import microcache
from tsmesh_gateway.microcache import GenerationReader, MicroCache

NS = fresh_namespace()


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
        """``init_generations_lua``: missing keys are set (to 100 here), then read."""
        self.sent.append(["EVAL", *keys])
        return [self.values.setdefault(k, b"100") for k in keys]


async def test_reads_arriving_during_a_fetch_join_the_next_one_and_see_the_bump() -> None:
    redis = GatedRedis()
    reader = GenerationReader(redis, NS)
    redis.values[NS.data_generation_key("t1")] = b"1"
    first = [asyncio.ensure_future(reader.read("t1")) for _ in range(3)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(redis.sent) == 1  # three concurrent reads, one command
    redis.values[NS.data_generation_key("t1")] = b"2"  # the writer bumps while the first read is in flight
    later = [asyncio.ensure_future(reader.read("t1")), asyncio.ensure_future(reader.read("t2"))]
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(redis.sent) == 1  # they wait: the in-flight read was sent before they arrived
    redis.gate.set()
    assert await asyncio.gather(*first) == [b"1", b"1", b"1"]
    assert await asyncio.gather(*later) == [b"2", b"100"]  # t2 was missing: set, never read as a constant
    assert redis.sent[1:] == [
        [NS.data_generation_key("t1"), NS.data_generation_key("t2")],
        ["EVAL", NS.data_generation_key("t2")],
    ]
    assert reader.fetches == 2


async def test_one_waiter_going_away_does_not_fail_the_others_of_its_batch() -> None:
    redis = GatedRedis()
    reader = GenerationReader(redis, NS)
    redis.values[NS.data_generation_key("t1")] = b"7"

    async def request() -> bytes | None:
        return await reader.read("t1")

    gone, stays = asyncio.ensure_future(request()), asyncio.ensure_future(request())
    for _ in range(5):
        await asyncio.sleep(0)
    assert len(redis.sent) == 1  # one shared read in flight
    gone.cancel()  # a client disconnects while its read is in flight
    for _ in range(5):
        await asyncio.sleep(0)
    redis.gate.set()
    assert await stays == b"7"
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_a_failed_fetch_fails_its_waiters_only(redis_client) -> None:
    class Broken:
        async def get(self, key: str) -> bytes | None:
            raise ConnectionError("down")

    reader = GenerationReader(Broken(), NS)
    results = await asyncio.gather(reader.read("t"), reader.read("t"), return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results)
    tenant = f"t-{uuid.uuid4().hex}"
    await redis_client.set(NS.data_generation_key(tenant), 7)
    real = GenerationReader(redis_client, NS)
    seven, fresh = await asyncio.gather(real.read(tenant), real.read(f"{tenant}-x"))
    assert seven == b"7" and fresh == await redis_client.get(NS.data_generation_key(f"{tenant}-x"))
    await redis_client.delete(NS.data_generation_key(tenant), NS.data_generation_key(f"{tenant}-x"))


async def test_lean_redis_reads_pipelines_reconnects_and_fails_fast(redis_client) -> None:
    tenant = f"t-{uuid.uuid4().hex}"
    key = NS.data_generation_key(tenant)
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
        reader = GenerationReader(lean, NS)
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


class StaticGenerations:
    async def read(self, tenant_id: str) -> bytes | None:
        return b"1"


@pytest.mark.parametrize("size", [10, 1000, 10_000])
def test_byte_accounting_is_within_ten_percent_of_tracemalloc(size: int) -> None:
    cache = MicroCache(StaticGenerations(), ttl=60.0, max_bytes=1 << 40)  # type: ignore[arg-type]
    tenant = "tenant-" + uuid.uuid4().hex
    entries = 3000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(entries):  # what a cached answer brings: its body, key and generation
            cache.put(tenant, os.urandom(16), 1732780800000000 + i, os.urandom(size))
        traced = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert cache.size_bytes == pytest.approx(traced, rel=0.10)


def test_gzipped_answer_is_compressed_once_kept_beside_the_body_and_counted(monkeypatch) -> None:
    compressed: list[bytes] = []

    def counting_gzip(body: bytes) -> bytes:
        compressed.append(body)
        return gzip.compress(body)

    monkeypatch.setattr(microcache, "gzip_body", counting_gzip)
    cache = MicroCache(StaticGenerations(), ttl=60.0, max_bytes=1 << 20)  # type: ignore[arg-type]
    body = orjson.dumps({"series": [{"metric": "cpu", "buckets": list(range(2000))}]})
    cache.put("t", b"k" * 16, 1, body)
    plain = cache.size_bytes
    hit = cache.get("t", b"k" * 16, 1)
    assert hit is body
    first = cache.gzipped("t", b"k" * 16, hit)
    assert gzip.decompress(first) == body and cache.size_bytes == plain + len(first) + microcache.BYTES_OVERHEAD
    assert cache.gzipped("t", b"k" * 16, cache.get("t", b"k" * 16, 1) or b"") is first
    assert len(compressed) == 1
    # a body that is not the cached one (a stale flight, a bypass) is compressed but not kept
    other = bytes(bytearray(body))  # equal, not the same object
    assert gzip.decompress(cache.gzipped("t", b"k" * 16, other)) == body and len(compressed) == 2
    assert cache.size_bytes == plain + len(first) + microcache.BYTES_OVERHEAD
    # replacing the entry gives back both bodies' bytes
    cache.put("t", b"k" * 16, b"2", b"{}")
    assert cache.size_bytes == 2 + 16 + 1 + microcache.ENTRY_OVERHEAD
