"""A tenant's series budget through the API, on real Redis: the series-creation rate, and the
active-series ceiling while Redis is down (a private redis-server, stopped); and the outage rules of
:class:`SeriesAdmission` as pure logic (a stand-in for the script call, a fake clock)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import ingest_harness
import orjson
import pytest
import redis.asyncio as aioredis
from ingest_harness import point
from redis.exceptions import ConnectionError as RedisConnectionError
from testkit import eventually
from throwaway import ThrowawayRedis

from tsmesh_common.errors import ResourceExhausted
from tsmesh_common.redis_keys import active_series_key
from tsmesh_ingest.limits import TenantLimits
from tsmesh_ingest.series_admission import SeriesAdmission

pytestmark = pytest.mark.integration

ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest


def series(prefix: str, count: int, ts: int) -> list[Any]:
    return [point("m", ts, 1.0, s=f"{prefix}{i}") for i in range(count)]


async def refused(write: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await write
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    return caught.value


def limit_of(error: grpc.aio.AioRpcError) -> str:
    return str(dict(error.trailing_metadata() or ())["tsmesh-limit"])


async def test_new_series_beyond_the_creation_rate_are_refused_while_existing_series_keep_writing(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    budget = {"new_series_per_second": 0.01, "burst_new_series": 100}
    limits = {tenant_id: budget, f"{tenant_id}-big": budget}
    ingest = await start_ingest(
        ts_db, env={"TSMESH_INGEST_TENANT_LIMITS": orjson.dumps(limits).decode(), "TSMESH_INGEST_MODE": "api"}
    )
    now = time.time_ns()
    assert (await ingest.write(tenant_id, series("a", 100, now))).accepted == 100
    error = await refused(ingest.write(tenant_id, series("b", 5, now)))
    assert limit_of(error) == "new_series_per_second"
    assert "new_series_per_second" in (error.details() or "") and "would create 5 new series" in (error.details() or "")
    assert float(dict(error.trailing_metadata() or ())["retry-after"]) > 0
    # the same 100 series again, and again: never charged
    assert (await ingest.write(tenant_id, series("a", 100, now + 1))).accepted == 100
    assert (await ingest.write(tenant_id, series("a", 100, now + 2))).accepted == 100
    # one write of more new series than the burst: refused whole, with the way out
    big = await refused(ingest.write(f"{tenant_id}-big", series("c", 10_000, now)))
    assert limit_of(big) == "new_series_per_second" and "split it" in (big.details() or "")
    # other tenants have budgets of their own (defaults: burst 10,000)
    assert (await ingest.write(f"{tenant_id}-other", series("a", 1_000, now))).accepted == 1_000


@pytest.fixture
async def own_redis() -> AsyncIterator[ThrowawayRedis]:
    redis = await asyncio.to_thread(ThrowawayRedis)
    try:
        yield redis
    finally:
        await asyncio.to_thread(redis.stop)


async def test_the_active_series_limit_holds_while_redis_is_down(
    ts_db: Any, start_ingest: Any, tenant_id: str, own_redis: ThrowawayRedis
) -> None:
    small, large = f"{tenant_id}-small", f"{tenant_id}-large"
    limits = {small: {"max_active_series": 25}, large: {"max_active_series": 1_000}}
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        ingest = await start_ingest(
            ts_db,
            redis=client,
            env={
                "TSMESH_REDIS_URL": own_redis.url,
                "TSMESH_INGEST_TENANT_LIMITS": orjson.dumps(limits).decode(),
                "TSMESH_INGEST_UNCHECKED_NEW_SERIES": "10",
                "TSMESH_INGEST_MODE": "api",
            },
        )
        now = time.time_ns()
        for tenant in (small, large):
            assert (await ingest.write(tenant, series("a", 20, now))).accepted == 20
        await asyncio.to_thread(own_redis.stop)

        # series this replica already wrote keep writing
        for tenant in (small, large):
            assert (await ingest.write(tenant, series("a", 20, now + 1))).accepted == 20
        # 20 known + 6 new would pass the ceiling of 25: refused, naming the limit
        error = await refused(ingest.write(small, series("b", 6, now)))
        assert limit_of(error) == "max_active_series" and "unreachable" in (error.details() or "")
        assert (await ingest.write(small, series("b", 5, now))).accepted == 5
        # far below its ceiling, a tenant still gets no more than the outage allowance (10) per replica
        assert (await ingest.write(large, series("b", 10, now))).accepted == 10
        assert (await ingest.write(large, series("b", 10, now + 1))).accepted == 10
        error = await refused(ingest.write(large, series("c", 1, now)))
        assert limit_of(error) == "max_active_series"
        assert (await ingest.write(large, series("a", 20, now + 2))).accepted == 20

        await asyncio.to_thread(own_redis.start)  # an empty Redis (no persistence): shared counting resumes

        async def accepted_again() -> bool:  # the replica asks Redis again after its retry interval
            try:
                return bool((await ingest.write(large, series("c", 50, now))).accepted == 50)
            except grpc.aio.AioRpcError as exc:
                assert limit_of(exc) == "max_active_series"
                return False

        await eventually(accepted_again, timeout=10)
        assert await client.zcard(active_series_key(large)) == 50
    finally:
        await client.aclose()


class FlakyRedis:
    """A stand-in for the one script call: answers "admitted" while ``up``, else fails to connect."""

    def __init__(self) -> None:
        self.up = True
        self.calls = 0

    def register_script(self, _source: str) -> Any:
        async def script(keys: list[str], args: list[Any]) -> list[int]:
            self.calls += 1
            if not self.up:
                raise RedisConnectionError("connection refused")
            new = len(args) - 5
            return [1, new, new, 0]

        return script


async def test_an_outage_freezes_the_epoch_so_recently_reported_series_keep_writing() -> None:
    redis, now = FlakyRedis(), [0.0]
    admission = SeriesAdmission(redis, refresh_seconds=60.0, unchecked_new_series=2, clock=lambda: now[0])
    limits = TenantLimits(max_active_series=1_000)
    await admission.admit("t", [1, 2, 3], limits)
    now[0] = 70.0  # the next epoch: the ids move to the previous epoch's set
    await admission.admit("t", [4], limits)
    redis.up = False
    now[0] = 200.0
    await admission.admit("t", [1, 2, 3, 4], limits)  # known: no unchecked budget spent
    calls = redis.calls
    now[0] = 400.0  # epochs pass during the outage: nothing known is forgotten
    await admission.admit("t", [1, 2, 3, 4, 5, 6], limits)  # two new ones: the whole allowance
    assert redis.calls == calls + 1  # one try after the retry interval, then local decisions only
    with pytest.raises(ResourceExhausted) as refused:
        await admission.admit("t", [7], limits)
    assert refused.value.limit == "max_active_series"
    await admission.admit("t", [1, 2, 3, 4, 5, 6], limits)
    redis.up = True
    now[0] = 402.0
    await admission.admit("t", [7], limits)  # Redis decides again
