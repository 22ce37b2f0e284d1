"""Caches never return stale data: read-your-writes through L1 and L2 after a generation bump."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from test_range import request
from tsq_support import (
    MINUTE_NS,
    QUERY_NS,
    REDIS_URL,
    Loader,
    Running,
    bump,
    bump_late,
    query_config,
    start_service,
    stop_service,
)

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_query.cache import LruCache
from tsmesh_query.generation import GenerationReader, Generations
from tsmesh_query.wiring import create_redis


def total(response) -> float:
    return sum(b.value for s in response.series for b in s.buckets)


async def test_read_your_writes_through_l1_and_l2(
    ts_db, token_mint, loader: Loader, redis_client: aioredis.Redis, tenant_id: str
) -> None:
    a = await start_service(query_config(ts_db), token_mint)
    b = await start_service(query_config(ts_db), token_mint)
    try:
        now = time.time_ns()
        start = now - now % MINUTE_NS - 60 * MINUTE_NS
        sid = await loader.series(tenant_id, "reqs", {"path": "/"})
        await loader.points([(sid, start + i * MINUTE_NS, 1.0) for i in range(30)], pending=True)
        await bump(redis_client, tenant_id)
        req = request("reqs", start, start + 70 * MINUTE_NS, MINUTE_NS, "sum", None, "none")
        first = await a.stub.QueryRange(req, metadata=a.md(tenant_id), timeout=5)
        assert total(first) == 30.0
        assert await a.stub.QueryRange(req, metadata=a.md(tenant_id), timeout=5) == first
        assert a.components.engine.stats.result_hits == 1

        from_l2 = await b.stub.QueryRange(req, metadata=b.md(tenant_id), timeout=5)
        assert from_l2 == first
        assert b.components.engine.stats.chunk_misses == 0 and b.components.engine.stats.chunk_hits > 0

        await loader.points([(sid, start + 58 * MINUTE_NS, 5.0)], pending=True)  # inside the late window
        await bump(redis_client, tenant_id)
        for svc in (a, b):
            fresh = await svc.stub.QueryRange(req, metadata=svc.md(tenant_id), timeout=5)
            assert total(fresh) == 35.0
    finally:
        await stop_service(a)
        await stop_service(b)


async def test_old_chunks_are_reused_by_a_sliding_window(service: Running, loader: Loader, tenant_id: str) -> None:
    now = time.time_ns()
    base = now - now % MINUTE_NS - 600 * MINUTE_NS
    sid = await loader.series(tenant_id, "load", {})
    await loader.points([(sid, base + i * MINUTE_NS, float(i)) for i in range(590)], pending=True)
    stats = service.components.engine.stats
    window = 240 * MINUTE_NS
    await service.stub.QueryRange(
        request("load", base, base + window, MINUTE_NS, "avg", None, "none"), metadata=service.md(tenant_id)
    )
    misses = stats.chunk_misses
    slid = await service.stub.QueryRange(
        request("load", base + 10 * MINUTE_NS, base + 10 * MINUTE_NS + window, MINUTE_NS, "avg", None, "none"),
        metadata=service.md(tenant_id),
    )
    assert len(slid.series[0].buckets) == 240
    assert stats.chunk_misses - misses <= 3  # the two partial edges and the newly covered chunk
    assert stats.chunk_hits >= 12


async def test_late_point_under_a_cached_immutable_chunk_is_seen_after_the_late_bump(
    ts_db, token_mint, loader: Loader, redis_client: aioredis.Redis, tenant_id: str
) -> None:
    a = await start_service(query_config(ts_db), token_mint)
    b = await start_service(query_config(ts_db), token_mint)
    try:
        now = time.time_ns()
        start = now - now % MINUTE_NS - 3 * 24 * 60 * MINUTE_NS  # days old: immutable chunks
        sid = await loader.series(tenant_id, "old", {"k": "v"})
        await loader.points([(sid, start + i * MINUTE_NS, 1.0) for i in range(60)], pending=True)
        req = request("old", start, start + 60 * MINUTE_NS, MINUTE_NS, "sum", None, "none")
        assert total(await a.stub.QueryRange(req, metadata=a.md(tenant_id), timeout=5)) == 60.0
        assert total(await b.stub.QueryRange(req, metadata=b.md(tenant_id), timeout=5)) == 60.0  # L2 filled
        assert a.components.engine.stats.chunk_misses > 0

        # a late point committed directly in the database, then the writer's late bump
        await loader.points([(sid, start + 30 * MINUTE_NS + 1, 5.0)], pending=True)
        await bump(redis_client, tenant_id)
        await bump_late(redis_client, tenant_id)
        for svc in (a, b):
            fresh = await svc.stub.QueryRange(req, metadata=svc.md(tenant_id), timeout=5)
            assert total(fresh) == 65.0
    finally:
        await stop_service(a)
        await stop_service(b)


def test_l1_is_bounded_in_bytes_and_expires() -> None:
    clock = [0.0]
    cache: LruCache[bytes] = LruCache("test", 100, clock=lambda: clock[0])
    cache.put("t1|a", b"x" * 40, 40, ttl=10)
    cache.put("t1|b", b"y" * 40, 40, ttl=10)
    assert cache.get("t1|a") is not None
    cache.put("t1|c", b"z" * 40, 40, ttl=10)
    assert cache.bytes <= 100 and cache.get("t1|b") is None and cache.get("t1|a") is not None
    clock[0] = 11.0
    assert cache.get("t1|a") is None and cache.get("t1|c") is None


async def test_generation_reader_batches_both_generations_and_refuses_junk(
    redis_client: aioredis.Redis, tenant_id: str
) -> None:
    other = f"{tenant_id}-b"
    client = create_redis(REDIS_URL)
    reader = GenerationReader(client, CircuitBreaker("test-redis", failures=(RedisError, OSError)), QUERY_NS)
    try:
        await bump(redis_client, tenant_id)
        await bump_late(redis_client, tenant_id)
        await bump_late(redis_client, tenant_id)
        first, second = await asyncio.gather(reader.get(tenant_id), reader.get(other))
        assert first == Generations(1, 2) and second is not None
        set_now = await redis_client.mget(QUERY_NS.data_generation_key(other), QUERY_NS.late_generation_key(other))
        assert second == Generations(*map(int, set_now)) and second.data > 2  # missing keys: set (ADR 0305)
        assert reader.reads == 1  # one MGET for both callers
        await redis_client.set(QUERY_NS.data_generation_key(other), "junk")
        assert await reader.get(other) is None  # unknown: callers bypass the caches
    finally:
        await reader.close()
        await client.aclose()
        await redis_client.delete(
            QUERY_NS.data_generation_key(tenant_id),
            QUERY_NS.late_generation_key(tenant_id),
            QUERY_NS.data_generation_key(other),
            QUERY_NS.late_generation_key(other),
        )
