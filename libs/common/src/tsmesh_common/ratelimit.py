"""A shared rate limiter: GCRA (generic cell rate algorithm) kept in Redis, one key per limited thing.

The whole decision is ONE Lua script run atomically by Redis (EVALSHA, loaded on first use), so
every replica of every service shares the same budget. The state is a single number per key, the
theoretical arrival time (TAT, microseconds of Redis' own clock), expiring once it is in the past.

``rate`` is the sustained rate per second and ``burst`` the number of units that may be spent at
once after an idle period. A ``cost`` above ``burst`` can never pass: the decision is refused with
``retry_after = math.inf``.

When Redis is unreachable (or slower than ``timeout``), a local in-process GCRA takes over so a
Redis outage neither blocks nor opens the gates; each such decision counts in
``tsmesh_ratelimit_fallback_total``. Redis is tried again after ``retry_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger(__name__)

FALLBACK_TOTAL = Counter(
    "tsmesh_ratelimit_fallback_total",
    "Rate-limit decisions taken by the local in-process GCRA because Redis was unreachable",
    ["prefix"],
)

# KEYS[1] = the key; ARGV = emission interval (us), tolerance (us), cost.
# Returns {allowed (0/1), remaining, retry_after_us, reset_after_us}.
GCRA_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local increment = interval * cost
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end
local new_tat = tat + increment
local diff = now - (new_tat - tolerance)
if diff < 0 then
  local remaining = math.floor((tolerance - (tat - now)) / interval)
  if remaining < 0 then remaining = 0 end
  local retry = -diff
  if increment > tolerance then retry = -1 end
  return {0, remaining, retry, tat - now}
end
local ttl = math.ceil((new_tat - now) / 1000)
if ttl < 1 then ttl = 1 end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', ttl)
local remaining = math.floor((tolerance - (new_tat - now)) / interval)
if remaining < 0 then remaining = 0 end
return {1, remaining, 0, new_tat - now}
"""

_REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer for one ``acquire``: whether it passed, the burst limit, the units left right
    now, how long to wait before retrying (0 when allowed; ``inf`` when the cost exceeds the
    burst) and how long until the bucket is full again."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: float
    reset_after: float


class LocalGcra:
    """The same GCRA in process memory, bounded to ``max_keys`` keys (least recently used dropped)."""

    def __init__(self, clock: Callable[[], float] = time.time, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._tat: OrderedDict[str, int] = OrderedDict()

    def acquire(self, key: str, interval_us: int, tolerance_us: int, cost: int, burst: int) -> RateDecision:
        now = int(self._clock() * 1_000_000)
        tat = self._tat.get(key, now)
        tat = max(tat, now)
        increment = interval_us * cost
        new_tat = tat + increment
        diff = now - (new_tat - tolerance_us)
        if diff < 0:
            remaining = max(0, (tolerance_us - (tat - now)) // interval_us)
            retry = math.inf if increment > tolerance_us else -diff / 1e6
            return RateDecision(False, burst, remaining, retry, (tat - now) / 1e6)
        self._tat[key] = new_tat
        self._tat.move_to_end(key)
        if len(self._tat) > self._max_keys:
            self._tat.popitem(last=False)
        remaining = max(0, (tolerance_us - (new_tat - now)) // interval_us)
        return RateDecision(True, burst, remaining, 0.0, (new_tat - now) / 1e6)


class RateLimiter:
    """GCRA rate limits shared through Redis, with a local fallback while Redis is unreachable."""

    def __init__(
        self,
        redis: Any,
        *,
        prefix: str,
        timeout: float = 0.25,
        retry_interval: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._script = redis.register_script(GCRA_LUA)
        self._local = LocalGcra(clock)
        self._down_until = 0.0
        self._fallback = FALLBACK_TOTAL.labels(prefix)

    async def acquire(self, key: str, *, rate: float, burst: int, cost: int = 1) -> RateDecision:
        """Spend ``cost`` units of ``key``'s budget (``rate`` per second, ``burst`` at once)."""
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError("rate must be a positive finite number")
        if burst < 1 or cost < 0:
            raise ValueError("burst must be >= 1 and cost >= 0")
        interval_us = max(1, round(1_000_000 / rate))
        tolerance_us = interval_us * burst
        if time.monotonic() >= self._down_until:
            try:
                result = await asyncio.wait_for(
                    self._script(keys=[f"{self._prefix}:{key}"], args=[interval_us, tolerance_us, cost]),
                    self._timeout,
                )
            except _REDIS_DOWN as exc:
                self._down_until = time.monotonic() + self._retry_interval
                log.warning("rate limiter falling back to local state", extra={"error": type(exc).__name__})
            else:
                allowed, remaining, retry_us, reset_us = (int(v) for v in result)
                retry = math.inf if retry_us < 0 else retry_us / 1e6
                return RateDecision(bool(allowed), burst, remaining, retry, reset_us / 1e6)
        self._fallback.inc()
        return self._local.acquire(key, interval_us, tolerance_us, cost, burst)

    async def _pipelined(self, prepared: Sequence[tuple[str, int, int, int, int]]) -> list[Any]:
        """One pipeline of EVALSHA calls. redis-py's script objects would send SCRIPT EXISTS before
        every pipeline (an extra round trip); here the script is loaded only when Redis answers
        NOSCRIPT (first use, or after a restart or SCRIPT FLUSH), and the pipeline is sent again."""

        def pipeline() -> Any:
            pipe = self._redis.pipeline(transaction=False)
            for key, interval_us, tolerance_us, cost, _ in prepared:
                pipe.evalsha(self._script.sha, 1, f"{self._prefix}:{key}", interval_us, tolerance_us, cost)
            return pipe

        try:
            results: list[Any] = await pipeline().execute()
        except NoScriptError:
            await self._redis.script_load(GCRA_LUA)
            results = await pipeline().execute()
        return results

    async def acquire_many(self, requests: Sequence[tuple[str, float, int, int]]) -> list[RateDecision]:
        """Several ``(key, rate, burst, cost)`` decisions in ONE Redis round trip (a pipeline of the
        same script), for callers that batch many requests; same semantics as :meth:`acquire`."""
        prepared: list[tuple[str, int, int, int, int]] = []
        for key, rate, burst, cost in requests:
            if not rate > 0 or not math.isfinite(rate):
                raise ValueError("rate must be a positive finite number")
            if burst < 1 or cost < 0:
                raise ValueError("burst must be >= 1 and cost >= 0")
            interval_us = max(1, round(1_000_000 / rate))
            prepared.append((key, interval_us, interval_us * burst, cost, burst))
        if not prepared:
            return []
        if time.monotonic() >= self._down_until:
            try:
                results = await asyncio.wait_for(self._pipelined(prepared), self._timeout)
            except _REDIS_DOWN as exc:
                self._down_until = time.monotonic() + self._retry_interval
                log.warning("rate limiter falling back to local state", extra={"error": type(exc).__name__})
            else:
                decisions = []
                for (_, _, _, _, burst), result in zip(prepared, results, strict=True):
                    allowed, remaining, retry_us, reset_us = (int(v) for v in result)
                    retry = math.inf if retry_us < 0 else retry_us / 1e6
                    decisions.append(RateDecision(bool(allowed), burst, remaining, retry, reset_us / 1e6))
                return decisions
        self._fallback.inc(len(prepared))
        return [self._local.acquire(key, i, t, c, b) for key, i, t, c, b in prepared]
