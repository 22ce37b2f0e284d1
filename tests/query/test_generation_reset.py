"""After Redis lost the generations (a restart without persistence), no cache entry from before the
loss is served again: a missing generation key never reads as a value an entry was keyed on (ADR 0305)."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from test_range import request
from tsq_support import MINUTE_NS, QUERY_NS, REDIS_URL, Loader, Running

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_query.generation import GenerationReader, Generations
from tsmesh_query.wiring import create_redis


def total(response) -> float:
    return sum(b.value for s in response.series for b in s.buckets)


async def lose_redis(redis: aioredis.Redis, tenant: str) -> None:
    """What a Redis restart without persistence does to this tenant: its generations and L2 entries go."""
    l2 = [key async for key in redis.scan_iter(match=QUERY_NS.query_cache_pattern(tenant), count=1000)]
    await redis.delete(QUERY_NS.data_generation_key(tenant), QUERY_NS.late_generation_key(tenant), *l2)


async def test_an_answer_cached_before_any_write_is_not_served_after_a_redis_loss(
    service: Running, loader: Loader, redis_client: aioredis.Redis, tenant_id: str
) -> None:
    now = time.time_ns()
    start = now - now % MINUTE_NS - 60 * MINUTE_NS
    req = request("fresh", start, start + 70 * MINUTE_NS, MINUTE_NS, "sum", None, "none")
    try:
        empty = await service.stub.QueryRange(req, metadata=service.md(tenant_id), timeout=5)
        assert total(empty) == 0.0 and not empty.series  # cached: the tenant has written nothing yet
        assert await service.stub.QueryRange(req, metadata=service.md(tenant_id), timeout=5) == empty
        assert service.components.engine.stats.result_hits == 1

        sid = await loader.series(tenant_id, "fresh", {})
        await loader.points([(sid, start + 5 * MINUTE_NS, 7.0)], pending=True)  # the writer commits
        await redis_client.eval(QUERY_NS.bump_generation_lua, 1, QUERY_NS.data_generation_key(tenant_id))  # and bumps
        await lose_redis(redis_client, tenant_id)

        after = await service.stub.QueryRange(req, metadata=service.md(tenant_id), timeout=5)
        assert total(after) == 7.0
    finally:
        await lose_redis(redis_client, tenant_id)


async def test_an_immutable_chunk_cached_before_any_late_write_is_not_served_after_a_redis_loss(
    service: Running, loader: Loader, redis_client: aioredis.Redis, tenant_id: str
) -> None:
    now = time.time_ns()
    start = now - now % MINUTE_NS - 3 * 24 * 60 * MINUTE_NS  # days old: immutable chunks, late generation
    sid = await loader.series(tenant_id, "old", {})
    await loader.points([(sid, start + i * MINUTE_NS, 1.0) for i in range(60)], pending=True)
    req = request("old", start, start + 60 * MINUTE_NS, MINUTE_NS, "sum", None, "none")
    try:
        assert total(await service.stub.QueryRange(req, metadata=service.md(tenant_id), timeout=5)) == 60.0
        assert service.components.engine.stats.chunk_misses > 0  # cached; the tenant never wrote late

        await loader.points([(sid, start + 30 * MINUTE_NS + 1, 5.0)], pending=True)  # a late point commits
        for key in (QUERY_NS.data_generation_key(tenant_id), QUERY_NS.late_generation_key(tenant_id)):
            await redis_client.eval(QUERY_NS.bump_generation_lua, 1, key)
        await lose_redis(redis_client, tenant_id)

        after = await service.stub.QueryRange(req, metadata=service.md(tenant_id), timeout=5)
        assert total(after) == 65.0
    finally:
        await lose_redis(redis_client, tenant_id)


async def test_the_reader_sets_missing_generations_once_and_past_the_lost_ones(
    redis_client: aioredis.Redis, tenant_id: str
) -> None:
    other = f"{tenant_id}-b"
    client = create_redis(REDIS_URL)
    reader = GenerationReader(client, CircuitBreaker("test-redis", failures=(RedisError, OSError)), QUERY_NS)
    try:
        await redis_client.set(QUERY_NS.data_generation_key(tenant_id), 5)  # the late key is missing
        first, second = await asyncio.gather(reader.get(tenant_id), reader.get(other))
        assert reader.reads == 1
        assert first.data == 5 and first.late > 5 and second.data > 5 and second.late > 5
        stored = await redis_client.mget(QUERY_NS.late_generation_key(tenant_id), QUERY_NS.data_generation_key(other))
        assert [first.late, second.data] == [int(v) for v in stored]
        assert await reader.get(other) == second  # set once: the next read finds the same value
        bumped = int(await redis_client.eval(QUERY_NS.bump_generation_lua, 1, QUERY_NS.data_generation_key(other)))
        await lose_redis(redis_client, other)
        third = await reader.get(other)
        assert third is not None and third.data > bumped and third.late > second.late
        assert third != Generations(0, 0)
    finally:
        await reader.close()
        await client.aclose()
        await lose_redis(redis_client, tenant_id)
        await lose_redis(redis_client, other)
