"""Brute-force protection for Login: an attempt is reserved in Redis before its password is checked.

Three failure counters, each with its own number of free failures and backoff cap (ADR 0105):

- per (account, address): the attacker's own budget, small, backing off up to 15 minutes;
- per account (any address): a larger budget bounding a distributed attack, with a short cap so
  an attacker elsewhere can only ever slow the owner down, never lock them out for long;
- per address (any account): a generous budget against spraying across accounts, large enough
  that many users behind one proxy do not lock each other out.

After ``free`` failures, each further attempt must wait ``base * 2**(failures - free)`` seconds
(capped) after the last one, otherwise it is refused with RESOURCE_EXHAUSTED and a retry hint.

:meth:`LoginThrottle.reserve` checks all three and counts the attempt as a failure in one Lua
script, so parallel guesses cannot all pass the check before any of them is counted; a success
then releases it (:meth:`LoginThrottle.succeeded`). The account is the canonical login identity
(:func:`tsmesh_common.identity.login_identity`), whether or not the user exists, so an unknown user
and a wrong password are throttled alike. Counters are shared by every replica through Redis.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError

from tsmesh_common.errors import ResourceExhausted
from tsmesh_common.redis_keys import RedisNamespace

log = logging.getLogger(__name__)

# KEYS = pair, account, address; ARGV = now, window, then (free, cap) for each key in that order,
# then the base delay. Returns "0" when the attempt is reserved (all three counted), else the
# seconds to wait (nothing counted).
RESERVE_LUA = """
local now = tonumber(ARGV[1])
local base = tonumber(ARGV[9])
local wait = 0
for i = 1, 3 do
  local got = redis.call('HMGET', KEYS[i], 'n', 't')
  local n, t = tonumber(got[1]), tonumber(got[2])
  local free, cap = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  if n and t and n >= free then
    local delay = math.min(base * 2 ^ math.min(n - free, 30), cap)
    local left = t + delay - now
    if left > wait then wait = left end
  end
end
if wait > 0 then return string.format('%.3f', wait) end
for i = 1, 3 do
  redis.call('HINCRBY', KEYS[i], 'n', 1)
  redis.call('HSET', KEYS[i], 't', ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[2])
end
return '0'
"""

# KEYS = pair, account, address: a success clears the account's counters and gives the address
# back the attempt it reserved.
SUCCEED_LUA = """
redis.call('DEL', KEYS[1], KEYS[2])
if redis.call('HEXISTS', KEYS[3], 'n') == 1 and tonumber(redis.call('HGET', KEYS[3], 'n')) > 0 then
  redis.call('HINCRBY', KEYS[3], 'n', -1)
end
return 1
"""


@dataclass(frozen=True)
class ThrottlePolicy:
    """How many failures are free per counter and how fast (and how far) the delay grows."""

    free_per_account_address: int = 5
    free_per_account: int = 50
    free_per_address: int = 200
    base_delay_seconds: float = 1.0
    max_delay_seconds: float = 900.0
    max_account_delay_seconds: float = 60.0

    def delay(self, failures: int, free: int, cap: float | None = None) -> float:
        if failures < free:
            return 0.0
        limit = self.max_delay_seconds if cap is None else cap
        return float(min(self.base_delay_seconds * 2.0 ** min(failures - free, 30), limit))


@dataclass(frozen=True)
class Attempt:
    """The three counter keys of one login attempt."""

    pair: str
    account: str
    address: str


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]


def attempt_keys(identity: str, address: str, prefix: str) -> Attempt:
    """The keys (under ``prefix``) for the canonical login ``identity`` tried from client ``address``."""
    return Attempt(
        pair=f"{prefix}pair:{_digest(identity, address)}",
        account=f"{prefix}acct:{_digest(identity)}",
        address=f"{prefix}addr:{address}",
    )


class LoginThrottle:
    """Reserves login attempts; fails open (with a warning) when Redis is unreachable."""

    def __init__(
        self,
        redis: Any,
        policy: ThrottlePolicy,
        namespace: RedisNamespace,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = namespace.login_failure_prefix
        self._policy = policy
        self._clock = clock
        self._window = int(max(policy.max_delay_seconds * 2, policy.max_account_delay_seconds * 2, 3600))
        self._shas: dict[str, str] = {}

    def attempt(self, identity: str, address: str) -> Attempt:
        """The counters of the canonical login ``identity`` tried from client ``address``."""
        return attempt_keys(identity, address, self._prefix)

    async def _run(self, script: str, attempt: Attempt, *args: Any) -> Any:
        keys = (attempt.pair, attempt.account, attempt.address)
        sha = self._shas.get(script)
        if sha is not None:
            try:
                return await self._redis.evalsha(sha, 3, *keys, *args)
            except NoScriptError:
                pass
        self._shas[script] = await self._redis.script_load(script)
        return await self._redis.evalsha(self._shas[script], 3, *keys, *args)

    async def reserve(self, attempt: Attempt) -> None:
        """Count ``attempt`` as a failure now, or raise :class:`ResourceExhausted` while any counter
        is inside its delay (counting nothing)."""
        p = self._policy
        try:
            answer = await self._run(
                RESERVE_LUA,
                attempt,
                f"{self._clock():.3f}",
                self._window,
                p.free_per_account_address,
                p.max_delay_seconds,
                p.free_per_account,
                p.max_account_delay_seconds,
                p.free_per_address,
                p.max_delay_seconds,
                p.base_delay_seconds,
            )
        except Exception as exc:  # noqa: BLE001 - Redis down: bcrypt still bounds the rate
            log.warning("login throttle unavailable", extra={"error": type(exc).__name__})
            return
        wait = float(answer)
        if wait > 0:
            raise ResourceExhausted("login_attempts", "too many failed attempts, retry later", retry_after_seconds=wait)

    async def succeeded(self, attempt: Attempt) -> None:
        """Release a reserved attempt that turned out right: the account starts afresh."""
        try:
            await self._run(SUCCEED_LUA, attempt)
        except Exception as exc:  # noqa: BLE001
            log.warning("login throttle unavailable", extra={"error": type(exc).__name__})
