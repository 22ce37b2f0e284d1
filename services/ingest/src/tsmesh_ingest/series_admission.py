"""A tenant's series budget: how many series are active and how fast new ones appear (ADR 0211).

Shared by every ingest replica through Redis: active series = distinct series written within
``window_seconds``, a sorted set per tenant (member = series id, score = last write). A series not in
that set is *new*, and new series spend the tenant's series-creation budget (GCRA,
``new_series_per_second`` with ``burst_new_series``), checked and recorded in the same script, so
existing series are never charged and a refused write changes nothing.

A replica only tells Redis about a series it has not reported in the current ``refresh_seconds``
epoch (a superset test, then a set difference: no per-point Python), so steady-state writes cost no
Redis work.

Fail safe: while Redis cannot answer (refused, or slower than ``timeout``; then not asked again for
``retry_interval``), a replica decides alone and only admits, per tenant, new series up to
``unchecked_new_series`` (series it has not reported in the last two epochs Redis answered in), as
long as the last count Redis gave plus those stays within ``max_active_series``, and at the creation
rate. So an outage lets a tenant exceed its ceiling by at most ``replicas x unchecked_new_series``
series, and series this replica saw recently keep writing. Beyond, writes are refused at once
(RESOURCE_EXHAUSTED naming the limit).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import RedisError

from tsmesh_common.errors import ResourceExhausted
from tsmesh_common.ratelimit import LocalGcra
from tsmesh_common.redis_keys import active_series_key, series_creation_key
from tsmesh_ingest.limits import TenantLimits
from tsmesh_ingest.metrics import LIMITS_UNCHECKED, REQUESTS_LIMITED

log = logging.getLogger(__name__)

ADMITTED, OVER_ACTIVE, OVER_CREATION = 1, 0, -1

# KEYS = active zset, creation GCRA state; ARGV = now (s), window (s), active limit,
# creation interval (us), creation tolerance (us), members...
# Returns {verdict (ADMITTED/OVER_ACTIVE/OVER_CREATION), active count, new series, retry (us; -1 never)}.
SERIES_LUA = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local card = redis.call('ZCARD', KEYS[1])
local new = 0
for i = 6, #ARGV do
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then new = new + 1 end
end
if card + new > limit then return {0, card, new, 0} end
if new > 0 then
  local t = redis.call('TIME')
  local clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local interval = tonumber(ARGV[4])
  local tolerance = tonumber(ARGV[5])
  local tat = tonumber(redis.call('GET', KEYS[2]))
  if tat == nil or tat < clock then tat = clock end
  local new_tat = tat + interval * new
  local diff = clock - (new_tat - tolerance)
  if diff < 0 then
    if interval * new > tolerance then return {-1, card, new, -1} end
    return {-1, card, new, -diff}
  end
  local ttl = math.ceil((new_tat - clock) / 1000)
  if ttl < 1 then ttl = 1 end
  redis.call('SET', KEYS[2], string.format('%d', new_tat), 'PX', ttl)
end
local args = {}
for i = 6, #ARGV do
  args[#args + 1] = now
  args[#args + 1] = ARGV[i]
  if #args >= 1000 then
    redis.call('ZADD', KEYS[1], unpack(args))
    args = {}
  end
end
if #args > 0 then redis.call('ZADD', KEYS[1], unpack(args)) end
redis.call('EXPIRE', KEYS[1], math.ceil(window) + 60)
return {1, card + new, new, 0}
"""

_REDIS_DOWN = (RedisError, OSError, TimeoutError)


class SeriesAdmission:
    """Checks and records the series of a write against the tenant's active-series ceiling and
    series-creation rate; see the module docstring for the outage rules."""

    def __init__(
        self,
        redis: Any,
        *,
        window_seconds: float = 3600.0,
        refresh_seconds: float = 60.0,
        max_tracked: int = 2_000_000,
        timeout: float = 0.25,
        retry_interval: float = 1.0,
        unchecked_new_series: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._script = redis.register_script(SERIES_LUA)
        self._window = window_seconds
        self._refresh = refresh_seconds
        self._max_tracked = max_tracked
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._unchecked_cap = unchecked_new_series
        self._clock = clock
        self._down_until = 0.0
        self._epoch = -1
        self._reported: dict[str, set[int]] = {}  # reported to Redis in this epoch
        self._previous: dict[str, set[int]] = {}  # ... and in the epoch before
        self._tracked = 0
        self._last_active: dict[str, int] = {}  # Redis's count at its last answer
        self._unchecked: dict[str, set[int]] = {}  # admitted here since Redis last answered
        self._local_creation = LocalGcra()

    async def admit(self, tenant_id: str, series_ids: Sequence[int], limits: TenantLimits) -> None:
        """Raise ResourceExhausted (``max_active_series`` or ``new_series_per_second``) or record."""
        now = self._clock()
        reachable = now >= self._down_until
        epoch = int(now // self._refresh)
        # a new epoch reports every series again, but what was reported is forgotten only once Redis
        # has answered: during an outage the sets of the last epochs stay known
        turning = reachable and (epoch != self._epoch or self._tracked > self._max_tracked)
        reported = None if turning else self._reported.get(tenant_id)
        if reported is not None and reported.issuperset(series_ids):  # steady state: no set is built
            return
        fresh = set(series_ids) if reported is None else set(series_ids) - reported
        if reachable:
            try:
                result = await asyncio.wait_for(self._shared(tenant_id, fresh, limits), self._timeout)
            except _REDIS_DOWN as exc:
                self._down_until = self._clock() + self._retry_interval
                log.warning("active-series count unreachable, deciding locally", extra={"error": type(exc).__name__})
            else:
                if turning:
                    self._roll(epoch)
                self._apply(tenant_id, fresh, limits, result)
                return
        self._admit_unchecked(tenant_id, fresh, limits)

    def _roll(self, epoch: int) -> None:
        if epoch != self._epoch or self._tracked > self._max_tracked:
            self._previous = {} if self._tracked > self._max_tracked else self._reported
            self._epoch, self._reported, self._tracked = epoch, {}, 0

    async def _shared(self, tenant_id: str, fresh: set[int], limits: TenantLimits) -> Any:
        interval_us = max(1, round(1_000_000 / limits.new_series_per_second))
        return await self._script(
            keys=[active_series_key(tenant_id), series_creation_key(tenant_id)],
            args=[
                time.time(),
                self._window,
                limits.max_active_series,
                interval_us,
                interval_us * limits.burst_new_series,
                *fresh,
            ],
        )

    def _apply(self, tenant_id: str, fresh: set[int], limits: TenantLimits, result: Any) -> None:
        verdict, active, new, retry_us = (int(v) for v in result)
        self._last_active[tenant_id] = active
        self._unchecked.pop(tenant_id, None)
        if verdict == OVER_ACTIVE:
            raise _over_active(
                f"tenant has {active} active series, the limit is {limits.max_active_series}; "
                f"this write would add {new}",
                self._refresh,
            )
        if verdict == OVER_CREATION:
            raise _over_creation(limits, new, math.inf if retry_us < 0 else retry_us / 1e6)
        self._reported.setdefault(tenant_id, set()).update(fresh)
        self._tracked += len(fresh)

    def _admit_unchecked(self, tenant_id: str, fresh: set[int], limits: TenantLimits) -> None:
        LIMITS_UNCHECKED.inc()
        unchecked = self._unchecked.setdefault(tenant_id, set())
        new = fresh - unchecked
        for known in (self._reported.get(tenant_id), self._previous.get(tenant_id)):
            if known:
                new -= known
        if not new:
            return
        added = len(unchecked) + len(new)
        estimate = self._last_active.get(tenant_id, 0) + added
        if added > self._unchecked_cap or estimate > limits.max_active_series:
            raise _over_active(
                "the shared active-series count is unreachable; meanwhile this replica admits at most "
                f"{self._unchecked_cap} new series per tenant within the limit of {limits.max_active_series} "
                f"(estimate {estimate}); this write would add {len(new)}",
                self._retry_interval,
            )
        interval_us = max(1, round(1_000_000 / limits.new_series_per_second))
        decision = self._local_creation.acquire(
            tenant_id, interval_us, interval_us * limits.burst_new_series, len(new), limits.burst_new_series
        )
        if not decision.allowed:
            raise _over_creation(limits, len(new), decision.retry_after)
        unchecked |= new


def _over_active(message: str, retry_after: float) -> ResourceExhausted:
    REQUESTS_LIMITED.labels("max_active_series").inc()
    return ResourceExhausted("max_active_series", message, retry_after_seconds=retry_after)


def _over_creation(limits: TenantLimits, new: int, retry_after: float) -> ResourceExhausted:
    REQUESTS_LIMITED.labels("new_series_per_second").inc()
    rate, burst = limits.new_series_per_second, limits.burst_new_series
    if math.isinf(retry_after):
        return ResourceExhausted(
            "new_series_per_second",
            f"this write would create {new} new series, more than the burst of {burst} "
            f"(tenant creation rate {rate:g} series/s): split it",
        )
    return ResourceExhausted(
        "new_series_per_second",
        f"tenant series-creation rate of {rate:g} series/s (burst {burst}) exceeded; this write would create "
        f"{new} new series (existing series keep writing)",
        retry_after_seconds=min(retry_after, 60.0),
    )
