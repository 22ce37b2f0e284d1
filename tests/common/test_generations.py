"""Generations only grow and never revisit a value, even after Redis lost the key: bumps and the
readers' initialization of a missing key both start from the Redis server's clock."""

from __future__ import annotations

from testkit import fresh_namespace

NS = fresh_namespace()


async def redis_now_us(redis_client) -> int:
    seconds, micros = await redis_client.time()
    return int(seconds) * 1_000_000 + int(micros)


async def test_bumps_grow_and_jump_past_old_values_after_a_loss(redis_client, tenant_id) -> None:
    key = NS.data_generation_key(tenant_id)
    try:
        before = await redis_now_us(redis_client)
        seen = [int(await redis_client.eval(NS.bump_generation_lua, 1, key)) for _ in range(3)]
        assert before <= seen[0] < seen[1] < seen[2] <= await redis_now_us(redis_client) + 2
        assert int(await redis_client.get(key)) == seen[2]  # stored in full digits, not as a float
        await redis_client.delete(key)  # Redis restarted without persistence
        after = int(await redis_client.eval(NS.bump_generation_lua, 1, key))
        assert after > seen[-1]
        far = str(after + 3_600_000_000)  # set by a clock an hour ahead: bumps still grow by one
        await redis_client.set(key, far)
        assert int(await redis_client.eval(NS.bump_generation_lua, 1, key)) == int(far) + 1
    finally:
        await redis_client.delete(key)


async def test_init_sets_only_missing_keys_past_every_earlier_value(redis_client, tenant_id) -> None:
    data, late = NS.data_generation_key(tenant_id), NS.late_generation_key(tenant_id)
    try:
        bumped = int(await redis_client.eval(NS.bump_generation_lua, 1, data))
        first = await redis_client.eval(NS.init_generations_lua, 2, data, late)
        assert int(first[0]) == bumped  # an existing key is left alone
        assert int(first[1]) > bumped  # a missing one starts at the server's clock, after the bump
        assert await redis_client.eval(NS.init_generations_lua, 1, late) == [first[1]]  # idempotent
        assert int(await redis_client.eval(NS.bump_generation_lua, 1, late)) > int(first[1])
        await redis_client.delete(data, late)  # Redis lost everything
        again = await redis_client.eval(NS.init_generations_lua, 2, data, late)
        assert int(again[0]) > bumped and int(again[1]) > int(first[1]) + 1
    finally:
        await redis_client.delete(data, late)
