"""Generation bumps only grow and never revisit a value, even after Redis lost the key."""

from __future__ import annotations

import time

from tsmesh_common.redis_keys import BUMP_GENERATION_LUA, data_generation_key


async def test_bumps_grow_and_jump_past_old_values_after_a_loss(redis_client, tenant_id) -> None:
    key = data_generation_key(tenant_id)
    try:
        now_us = time.time_ns() // 1000
        seen = [int(await redis_client.eval(BUMP_GENERATION_LUA, 1, key, str(now_us))) for _ in range(3)]
        assert seen[0] >= now_us and seen[1] == seen[0] + 1 and seen[2] == seen[1] + 1
        await redis_client.delete(key)  # Redis restarted without persistence
        after = int(await redis_client.eval(BUMP_GENERATION_LUA, 1, key, str(time.time_ns() // 1000)))
        assert after > seen[-1]
        assert int(await redis_client.eval(BUMP_GENERATION_LUA, 1, key, "1")) == after + 1  # a slow clock still grows
    finally:
        await redis_client.delete(key)
