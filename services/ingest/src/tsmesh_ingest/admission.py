"""Per-tenant admission of a validated write: ingestion rate (GCRA in Redis) and active series.

Both are shared by every ingest replica through Redis. Exceeding one raises ResourceExhausted naming
the limit (``points_per_second`` or ``max_active_series``) with a retry hint.

Active series = distinct series written within ``window_seconds``, kept in a Redis sorted set per
tenant (member = series id, score = last write). A replica only tells Redis about a series it has
not reported in the current ``refresh_seconds`` epoch (a superset test, then a set difference: no
per-point Python), so steady-state writes cost no Redis work and build no set for this check.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from tsmesh_common.errors import ResourceExhausted
from tsmesh_common.ratelimit import RateLimiter
from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_ingest.limits import LimitsProvider
from tsmesh_ingest.metrics import LIMITS_UNCHECKED, REQUESTS_LIMITED

log = logging.getLogger(__name__)

# KEYS[1] = zset; ARGV = now, window, limit, members...; returns {admitted 0/1, active count}.
ACTIVE_SERIES_LUA = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local card = redis.call('ZCARD', KEYS[1])
local new = 0
for i = 4, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then new = new + 1 end
end
if card + new > limit then return {0, card} end
local args = {}
for i = 4, #ARGV do
  args[#args + 1] = now
  args[#args + 1] = ARGV[i]
  if #args >= 1000 then
    redis.call('ZADD', KEYS[1], unpack(args))
    args = {}
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
redis.call('EXPIRE', KEYS[1], math.ceil(window) + 60)
return {1, card + new}
"""


class Admission:
    """Applies a tenant's limits to a validated write before anything is produced."""

    def __init__(
        self,
        redis: Any,
        limits: LimitsProvider,
        limiter: RateLimiter,
        namespace: RedisNamespace,
        *,
        window_seconds: float = 3600.0,
        refresh_seconds: float = 60.0,
        max_tracked: int = 2_000_000,
        timeout: float = 0.25,
    ) -> None:
        self._limits = limits
        self._limiter = limiter
        self._active_key = namespace.active_series_key
        self._script = redis.register_script(ACTIVE_SERIES_LUA)
        self._window = window_seconds
        self._refresh = refresh_seconds
        self._max_tracked = max_tracked
        self._timeout = timeout
        self._epoch = -1
        self._reported: dict[str, set[int]] = {}
        self._tracked = 0

    async def admit(self, tenant_id: str, series_ids: Sequence[int]) -> None:
        """Spend ``len(series_ids)`` points of the tenant's rate and register new active series."""
        if not series_ids:
            return
        limits = self._limits.for_tenant(tenant_id)
        decision = await self._limiter.acquire(
            tenant_id, rate=limits.points_per_second, burst=limits.burst_points, cost=len(series_ids)
        )
        if not decision.allowed:
            REQUESTS_LIMITED.labels("points_per_second").inc()
            raise ResourceExhausted(
                "points_per_second",
                f"tenant ingestion rate of {limits.points_per_second:g} points/s "
                f"(burst {limits.burst_points}) exceeded",
                retry_after_seconds=min(decision.retry_after, 60.0),
            )
        await self._check_active_series(tenant_id, series_ids, limits.max_active_series)

    async def _check_active_series(self, tenant_id: str, series_ids: Sequence[int], limit: int) -> None:
        epoch = int(time.monotonic() // self._refresh)
        if epoch != self._epoch or self._tracked > self._max_tracked:
            self._epoch, self._reported, self._tracked = epoch, {}, 0
        reported = self._reported.get(tenant_id)
        if reported is not None and reported.issuperset(series_ids):  # steady state: no set is built
            return
        fresh = set(series_ids) if reported is None else set(series_ids) - reported
        try:
            admitted, active = await asyncio.wait_for(
                self._script(
                    keys=[self._active_key(tenant_id)],
                    args=[time.time(), self._window, limit, *fresh],
                ),
                self._timeout,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            LIMITS_UNCHECKED.inc()
            log.warning("active-series check skipped, redis unreachable", extra={"error": type(exc).__name__})
            return
        if not int(admitted):
            REQUESTS_LIMITED.labels("max_active_series").inc()
            raise ResourceExhausted(
                "max_active_series",
                f"tenant has {int(active)} active series, the limit is {limit}; this write would add {len(fresh)}",
                retry_after_seconds=self._refresh,
            )
        self._reported.setdefault(tenant_id, set()).update(fresh)
        self._tracked += len(fresh)
