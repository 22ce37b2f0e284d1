"""Brute-force protection for Login: per-account and per-address failure counters in Redis.

After ``free`` failures, each further attempt must wait ``base * 2**(failures - free)`` seconds
(capped) after the last failure, otherwise it is refused with RESOURCE_EXHAUSTED and a retry hint.
The account key is derived from (tenant, email) whether or not the user exists, so an unknown user
and a wrong password are throttled alike. Counters are shared by every replica through Redis.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tsmesh_common.errors import ResourceExhausted

log = logging.getLogger(__name__)

KEY_PREFIX = "tsmesh:auth:loginfail:"


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures are free and how fast the delay grows."""

    free_per_account: int = 5
    free_per_address: int = 20
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 900.0

    def delay(self, failures: int, free: int) -> float:
        if failures < free:
            return 0.0
        return float(min(self.base_delay_seconds * 2.0 ** min(failures - free, 30), self.max_delay_seconds))


def account_key(tenant: str, email: str) -> str:
    digest = hashlib.sha256(f"{tenant}\x00{email}".encode()).hexdigest()[:32]
    return f"{KEY_PREFIX}acct:{digest}"


def address_key(address: str) -> str:
    return f"{KEY_PREFIX}addr:{address}"


class LoginThrottle:
    """Checks and records failed logins; fails open (with a warning) when Redis is unreachable."""

    def __init__(self, redis: Any, policy: ThrottlePolicy, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._policy = policy
        self._clock = clock
        self._window = int(max(policy.max_delay_seconds * 2, 3600))

    async def check(self, account: str, address: str) -> None:
        """Raise :class:`ResourceExhausted` while either counter is inside its delay."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hmget(account, "n", "t")
                pipe.hmget(address_key(address), "n", "t")
                (acct_n, acct_t), (addr_n, addr_t) = await pipe.execute()
        except Exception as exc:  # noqa: BLE001 - Redis down: bcrypt still bounds the rate
            log.warning("login throttle unavailable", extra={"error": type(exc).__name__})
            return
        now = self._clock()
        wait = max(
            self._remaining(acct_n, acct_t, self._policy.free_per_account, now),
            self._remaining(addr_n, addr_t, self._policy.free_per_address, now),
        )
        if wait > 0:
            raise ResourceExhausted("login_attempts", "too many failed attempts, retry later", retry_after_seconds=wait)

    def _remaining(self, count: bytes | None, last: bytes | None, free: int, now: float) -> float:
        if count is None or last is None:
            return 0.0
        delay = self._policy.delay(int(count), free)
        return max(0.0, float(last) + delay - now)

    async def failure(self, account: str, address: str) -> None:
        now = self._clock()
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in (account, address_key(address)):
                    pipe.hincrby(key, "n", 1)
                    pipe.hset(key, "t", f"{now:.3f}")
                    pipe.expire(key, self._window)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            log.warning("login throttle unavailable", extra={"error": type(exc).__name__})

    async def success(self, account: str) -> None:
        try:
            await self._redis.delete(account)
        except Exception as exc:  # noqa: BLE001
            log.warning("login throttle unavailable", extra={"error": type(exc).__name__})
