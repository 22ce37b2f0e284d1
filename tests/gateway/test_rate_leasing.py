"""Rate-limit leasing (``tsmesh_gateway.rate_leasing``): batching and leases, pure logic with a fake limiter."""

from __future__ import annotations

import asyncio
import math

from tsmesh_common.ratelimit import LocalGcra, RateDecision
from tsmesh_gateway.rate_leasing import BatchingLimiter


class FakeLimiter:
    """Exact GCRA in memory; records every ``acquire_many`` batch."""

    def __init__(self, clock) -> None:
        self.gcra = LocalGcra(clock)
        self.batches: list[list[tuple[str, float, int, int]]] = []

    async def acquire_many(self, requests):
        self.batches.append(list(requests))
        out = []
        for key, rate, burst, cost in requests:
            interval = max(1, round(1_000_000 / rate))
            out.append(self.gcra.acquire(key, interval, interval * burst, cost, burst))
        return out


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_round_trip_per_window_and_leases_for_generous_budgets() -> None:
    clock = Clock()
    fake = FakeLimiter(clock)
    limiter = BatchingLimiter(fake, clock=clock, max_lease=8)
    answers = await asyncio.gather(
        *(limiter.decide([("k", 1000.0, 1000, 1), ("a", 1000.0, 1000, 1)]) for _ in range(5))
    )
    assert len(fake.batches) == 1
    assert sorted(fake.batches[0]) == [("a", 1000.0, 1000, 13), ("k", 1000.0, 1000, 13)]
    assert all(d.allowed for row in answers for d in row)
    for _ in range(8):
        assert all(d.allowed for d in await limiter.decide([("k", 1000.0, 1000, 1), ("a", 1000.0, 1000, 1)]))
    assert len(fake.batches) == 1
    await limiter.decide([("k", 1000.0, 1000, 1), ("a", 1000.0, 1000, 1)])
    assert len(fake.batches) == 2
    clock.now += 1.0
    await limiter.decide([("k", 1000.0, 1000, 1), ("a", 1000.0, 1000, 1)])
    assert len(fake.batches) == 3


async def test_hot_keys_get_growing_leases_and_an_unspent_lease_halves_the_size() -> None:
    clock = Clock()
    fake = FakeLimiter(clock)
    limiter = BatchingLimiter(fake, clock=clock, max_lease=8, growth=4)
    for _ in range(9 + 17 + 33 + 33 + 1):
        assert (await limiter.decide([("hot", 1000.0, 1000, 1)]))[0].allowed
    assert [batch[0][3] for batch in fake.batches] == [1 + 8, 1 + 16, 1 + 32, 1 + 32, 1 + 32]
    assert limiter.round_trips == 5
    clock.now += 1.0
    await limiter.decide([("hot", 1000.0, 1000, 1)])
    assert fake.batches[-1] == [("hot", 1000.0, 1000, 1 + 16)]
    clock.now += 1.0
    await limiter.decide([("hot", 1000.0, 1000, 1)])
    assert fake.batches[-1] == [("hot", 1000.0, 1000, 1 + 8)]
    clock.now += 1.0
    await limiter.decide([("hot", 1000.0, 1000, 1)])
    assert fake.batches[-1] == [("hot", 1000.0, 1000, 1 + 8)]  # never below the initial size
    assert all(cost <= 1000 // 20 + 1 for batch in fake.batches for _, _, _, cost in batch)


async def test_tight_budgets_are_exact_and_refusals_retried_unit_by_unit() -> None:
    clock = Clock()
    fake = FakeLimiter(clock)
    limiter = BatchingLimiter(fake, clock=clock)
    rows = await asyncio.gather(*(limiter.decide([("t", 1.0, 3, 1)]) for _ in range(5)))
    assert [row[0].allowed for row in rows].count(True) == 3
    assert fake.batches[0] == [("t", 1.0, 3, 5)]
    assert fake.batches[1] == [("t", 1.0, 3, 1)] * 5
    refused = next(row[0] for row in rows if not row[0].allowed)
    assert isinstance(refused, RateDecision) and 0 < refused.retry_after < math.inf


async def test_acquire_many_in_redis_matches_acquire(redis_client) -> None:
    import uuid

    from tsmesh_common.ratelimit import RateLimiter

    limiter = RateLimiter(redis_client, prefix=f"test:many:{uuid.uuid4().hex[:8]}")
    first = await limiter.acquire_many([("a", 1.0, 3, 2), ("b", 1.0, 3, 1)])
    assert [d.allowed for d in first] == [True, True]
    assert [d.remaining for d in first] == [1, 2]
    second = await limiter.acquire_many([("a", 1.0, 3, 2), ("b", 1.0, 3, 3)])
    assert [d.allowed for d in second] == [False, False]
    assert second[0].retry_after > 0
    single = await limiter.acquire("a", rate=1.0, burst=3)
    assert single.allowed and single.remaining == 0
    assert await limiter.acquire_many([]) == []


async def test_one_pipeline_in_flight_and_requests_meanwhile_share_the_next() -> None:
    clock = Clock()
    fake = FakeLimiter(clock)
    gate = asyncio.Event()
    exact = fake.acquire_many

    async def gated(requests):
        await gate.wait()
        return await exact(requests)

    fake.acquire_many = gated  # type: ignore[method-assign]
    limiter = BatchingLimiter(fake, clock=clock, window=0.0)
    first = asyncio.ensure_future(limiter.decide([("k", 1.0, 10, 1)]))  # tight: no lease
    await asyncio.sleep(0.01)
    assert len(fake.batches) == 0 and limiter.round_trips == 1  # sent, waiting on the gate
    later = [asyncio.ensure_future(limiter.decide([("k", 1.0, 10, 1)])) for _ in range(3)]
    for _ in range(5):  # several windows pass: nothing else is sent while the first is out
        await asyncio.sleep(0.005)
    assert limiter.round_trips == 1
    gate.set()
    await asyncio.gather(first, *later)
    assert limiter.round_trips == 2 and [len(b) for b in fake.batches] == [1, 1]
    assert fake.batches[1] == [("k", 1.0, 10, 3)]  # the three that waited, in one purchase


async def test_an_expired_lease_halves_the_next_once_however_many_requests_see_it() -> None:
    clock = Clock()
    fake = FakeLimiter(clock)
    limiter = BatchingLimiter(fake, clock=clock, max_lease=8, growth=8)
    for _ in range(1 + 8 + 1 + 16 + 1):
        assert (await limiter.decide([("hot", 1000.0, 10_000, 1)]))[0].allowed
    assert [batch[0][3] for batch in fake.batches] == [1 + 8, 1 + 16, 1 + 32]
    clock.now += 1.0  # the 32-unit lease expires unspent while five requests arrive together
    await asyncio.gather(*(limiter.decide([("hot", 1000.0, 10_000, 1)]) for _ in range(5)))
    assert fake.batches[-1] == [("hot", 1000.0, 10_000, 5 + 16)]


async def test_a_hot_lease_is_renewed_ahead_and_requests_never_wait() -> None:
    clock = Clock()
    fake = FakeLimiter(clock)
    limiter = BatchingLimiter(fake, clock=clock, max_lease=8, window=0.0)
    await limiter.decide([("k", 1000.0, 1000, 1)])  # buys 1 + a lease of 8
    assert fake.batches == [[("k", 1000.0, 1000, 9)]]
    spent = [limiter.spend("k") for _ in range(6)]  # down to a quarter left: the next is bought ahead
    assert all(rate is not None for rate in spent) and len(fake.batches) == 1
    await asyncio.sleep(0.01)
    assert fake.batches[-1] == [("k", 1000.0, 1000, 16)]  # ran low: doubled, no request waiting on it
    assert all(limiter.spend("k") is not None for _ in range(16))  # ran low again on the way
    await asyncio.sleep(0.01)
    assert fake.batches[-1] == [("k", 1000.0, 1000, 32)]
    clock.now += 0.08  # late in the 32-unit lease with most of it left: renewed ahead at half the size
    assert limiter.spend("k") is not None
    await asyncio.sleep(0.01)
    assert fake.batches[-1] == [("k", 1000.0, 1000, 16)]
    assert limiter.round_trips == len(fake.batches) == 4
