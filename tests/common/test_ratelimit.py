"""The shared GCRA rate limiter: pure logic with a fake clock, then real Redis, then Redis down."""

from __future__ import annotations

import asyncio
import hashlib
import math
import shutil
import subprocess
import uuid

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from throwaway import free_port, wait_for_port

from tsmesh_common.ratelimit import GCRA_LUA, LocalGcra, RateDecision, RateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def _start(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _fallbacks(prefix: str) -> float:
    return REGISTRY.get_sample_value("tsmesh_ratelimit_fallback_total", {"prefix": prefix}) or 0.0


def test_local_gcra_allows_the_burst_then_refuses_with_a_retry_hint() -> None:
    clock = FakeClock()
    gcra = LocalGcra(clock)
    interval, burst = 100_000, 5  # 10 per second
    decisions = [gcra.acquire("k", interval, interval * burst, 1, burst) for _ in range(5)]
    assert all(d.allowed for d in decisions)
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0]
    refused = gcra.acquire("k", interval, interval * burst, 1, burst)
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(0.1)
    assert refused.limit == 5
    clock.now += 0.1
    assert gcra.acquire("k", interval, interval * burst, 1, burst).allowed
    assert not gcra.acquire("k", interval, interval * burst, 1, burst).allowed
    clock.now += 10
    again = gcra.acquire("k", interval, interval * burst, 3, burst)
    assert again.allowed and again.remaining == 2


def test_local_gcra_refuses_a_cost_above_the_burst_forever() -> None:
    gcra = LocalGcra(FakeClock())
    decision = gcra.acquire("k", 1000, 1000 * 10, 11, 10)
    assert not decision.allowed
    assert math.isinf(decision.retry_after)


def test_local_gcra_stays_bounded() -> None:
    gcra = LocalGcra(FakeClock(), max_keys=10)
    for i in range(100):
        gcra.acquire(f"k{i}", 1000, 10_000, 1, 10)
    assert len(gcra._tat) == 10


def test_decision_is_frozen() -> None:
    decision = RateDecision(True, 10, 9, 0.0, 0.1)
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]


@pytest.mark.integration
async def test_redis_gcra_shares_the_budget_between_limiters(redis_client: aioredis.Redis) -> None:
    prefix = f"test:rl:{uuid.uuid4().hex[:8]}"
    first = RateLimiter(redis_client, prefix=prefix)
    second = RateLimiter(redis_client, prefix=prefix)
    results = [await (first if i % 2 else second).acquire("tenant-a", rate=10, burst=4) for i in range(4)]
    assert all(r.allowed for r in results)
    assert results[-1].remaining == 0
    refused = await first.acquire("tenant-a", rate=10, burst=4)
    assert not refused.allowed
    assert 0 < refused.retry_after <= 0.1 + 1e-3
    assert refused.limit == 4
    assert 0.3 < refused.reset_after <= 0.4 + 1e-3
    other = await second.acquire("tenant-b", rate=10, burst=4, cost=4)
    assert other.allowed and other.remaining == 0
    await asyncio.sleep(refused.retry_after + 0.02)
    assert (await second.acquire("tenant-a", rate=10, burst=4)).allowed
    sha = hashlib.sha1(GCRA_LUA.encode()).hexdigest()
    assert (await redis_client.script_exists(sha)) == [True]
    ttl = await redis_client.pttl(f"{prefix}:tenant-a")
    assert 0 < ttl <= 400
    assert _fallbacks(prefix) == 0


@pytest.mark.integration
async def test_redis_gcra_refuses_a_cost_above_the_burst(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, prefix=f"test:rl:{uuid.uuid4().hex[:8]}")
    decision = await limiter.acquire("t", rate=100, burst=10, cost=11)
    assert not decision.allowed
    assert math.isinf(decision.retry_after)
    assert (await limiter.acquire("t", rate=100, burst=10, cost=10)).allowed


async def test_invalid_arguments_are_refused(redis_client: aioredis.Redis) -> None:
    limiter = RateLimiter(redis_client, prefix="test:rl:args")
    with pytest.raises(ValueError):
        await limiter.acquire("t", rate=0, burst=1)
    with pytest.raises(ValueError):
        await limiter.acquire("t", rate=1, burst=0)


@pytest.mark.integration
async def test_falls_back_to_local_gcra_while_redis_is_down_and_recovers() -> None:
    server = shutil.which("redis-server")
    assert server is not None
    port = free_port()
    args = [server, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"]
    proc = _start(args)
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2, socket_timeout=0.2)
    prefix = f"test:rl:{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(client, prefix=prefix, retry_interval=0.0, timeout=2.0)
    try:
        wait_for_port(port)
        assert (await limiter.acquire("t", rate=1, burst=2)).allowed
        assert _fallbacks(prefix) == 0
        assert await client.exists(f"{prefix}:t") == 1

        proc.terminate()
        proc.wait(5)
        down = [await limiter.acquire("t", rate=1, burst=2) for _ in range(3)]
        assert [d.allowed for d in down] == [True, True, False]
        assert down[2].retry_after > 0
        assert _fallbacks(prefix) == 3

        proc = _start(args)
        wait_for_port(port)
        back = await limiter.acquire("t", rate=1, burst=2)
        assert back.allowed
        assert _fallbacks(prefix) == 3
        assert await client.exists(f"{prefix}:t") == 1
    finally:
        await client.aclose()
        proc.terminate()
        proc.wait(5)


@pytest.mark.integration
async def test_unreachable_redis_does_not_block_the_caller() -> None:
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    prefix = f"test:rl:{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(client, prefix=prefix, timeout=0.2)
    try:
        decision = await asyncio.wait_for(limiter.acquire("t", rate=5, burst=1), 2.0)
        assert decision.allowed
        assert not (await limiter.acquire("t", rate=5, burst=1)).allowed
        assert _fallbacks(prefix) == 2
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_batched_decisions_send_no_script_exists_and_survive_a_script_flush(
    redis_client: aioredis.Redis,
) -> None:
    prefix = f"test:rl:{uuid.uuid4().hex[:8]}"
    limiter = RateLimiter(redis_client, prefix=prefix)

    async def script_exists_calls() -> int:
        stats = await redis_client.info("commandstats")
        return int(stats.get("cmdstat_script|exists", {}).get("calls", 0))

    await redis_client.script_flush()  # as after a Redis restart: the first pipeline meets NOSCRIPT
    first = await limiter.acquire_many([("a", 10.0, 4, 1), ("b", 10.0, 4, 4)])
    assert [d.allowed for d in first] == [True, True] and [d.remaining for d in first] == [3, 0]
    before = await script_exists_calls()
    again = await limiter.acquire_many([("a", 10.0, 4, 1), ("b", 10.0, 4, 1)])
    assert [d.allowed for d in again] == [True, False]
    assert await script_exists_calls() == before  # EVALSHA straight away: one round trip per batch
    assert _fallbacks(prefix) == 0
