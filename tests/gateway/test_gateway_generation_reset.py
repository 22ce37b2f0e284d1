"""After Redis lost the data generations (a restart without persistence), the micro-cache serves no
answer cached before the loss: a missing key never reads as a value an answer was keyed on (ADR 0305)."""

from __future__ import annotations

import uuid

import pytest
from testkit import fresh_namespace

from tsmesh_common.leanredis import LeanRedis
from tsmesh_gateway.microcache import GenerationReader

RANGE = {"selector": {"metric": "cpu"}, "start_ns": 0, "end_ns": 10**12, "step_ns": 10**9}


@pytest.mark.parametrize("fast", ["true", "false"], ids=["fast-path", "starlette"])
async def test_an_answer_cached_before_any_write_is_not_served_after_a_redis_loss(
    gateway_factory, mesh, redis_client, fast: str
) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_FAST_PATH=fast)
    auth = gw.bearer("read")
    key = gw.ns.data_generation_key(gw.tenant)
    try:
        first = await gw.client.post("/v1/query/range", json=RANGE, headers=auth)
        assert first.status_code == 200, first.text
        assert first.headers["x-cache"] == "miss"  # the tenant has written nothing yet
        assert (await gw.client.post("/v1/query/range", json=RANGE, headers=auth)).headers["x-cache"] == "hit"
        calls = mesh.query.calls["QueryRange"]

        await gw.bump_generation(redis_client)  # the writer commits and bumps
        await redis_client.delete(key)  # Redis restarts without persistence

        after = await gw.client.post("/v1/query/range", json=RANGE, headers=auth)
        assert after.headers["x-cache"] == "miss" and mesh.query.calls["QueryRange"] == calls + 1
        assert after.json() != first.json()  # the fake's answer carries its call count
    finally:
        await redis_client.delete(key)


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "redis-py"])
async def test_the_reader_sets_a_missing_generation_once_and_past_the_lost_one(redis_client, lean: bool) -> None:
    tenant = f"t-{uuid.uuid4().hex}"
    ns = fresh_namespace()
    key = ns.data_generation_key(tenant)
    client = LeanRedis.from_url("redis://127.0.0.1:6379/0") if lean else redis_client
    reader = GenerationReader(client, ns)
    try:
        first = await reader.read(tenant)
        assert first is not None and first == await redis_client.get(key) and int(first) > 0
        assert await reader.read(tenant) == first
        bumped = int(await redis_client.eval(ns.bump_generation_lua, 1, key))
        await redis_client.delete(key)
        again = await reader.read(tenant)
        assert again is not None and int(again) > bumped > int(first)
    finally:
        if isinstance(client, LeanRedis):
            await client.aclose()
        await redis_client.delete(key)
