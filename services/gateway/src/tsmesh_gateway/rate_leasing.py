"""Rate-limit leasing: per-route-class budgets (per client address, then per token or user) spent
from leases of units bought in Redis ahead of need, so most requests decide locally (ADR 0465)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

from prometheus_client import Counter

from tsmesh_common.context import Principal
from tsmesh_common.ratelimit import RateDecision
from tsmesh_gateway.clientaddr import budget_address
from tsmesh_gateway.config import RateLimits
from tsmesh_gateway.http_errors import HttpError

ROUND_TRIPS = Counter(
    "tsmesh_gateway_ratelimit_round_trips_total", "Redis pipelines sent for rate-limit decisions (batches and leases)"
)
RATE_LIMITED = Counter("tsmesh_gateway_rate_limited_total", "Requests refused by a rate limit", ["route_class", "by"])


Decision = tuple[str, float, int, int]  # key, rate, burst, cost
Rate = tuple[int, int, float]  # what the RateLimit-* headers say: limit, remaining, seconds until reset


class Limiter(Protocol):
    """A shared rate limiter (``tsmesh_common.ratelimit.RateLimiter``)."""

    async def acquire_many(self, requests: Sequence[Decision]) -> list[RateDecision]: ...


class _Lease:
    """Units of one key already paid for in Redis, spendable here until ``expires``; the next one is
    bought ahead once a quarter of the units or of the period is left (``low``, ``renew_at``)."""

    __slots__ = ("expires", "limit", "low", "rate", "remaining", "renew_at", "renewing", "reset_after", "units")

    def __init__(self, units: int, now: float, period: float, rate: float, decision: RateDecision) -> None:
        self.units = units
        self.low = units // 4
        self.expires = now + period
        self.renew_at = now + period * 0.75
        self.renewing = False
        self.rate = rate
        self.limit = decision.limit
        self.remaining = decision.remaining
        self.reset_after = decision.reset_after


class BatchingLimiter:
    """Rate-limit decisions shared through Redis at a fraction of a round trip per request.

    - decisions of every request arriving within ``window`` go to Redis in ONE pipeline
      (``RateLimiter.acquire_many``), and only one pipeline is in flight: requests arriving
      meanwhile share the next one, sent when it returns (under load, a lease running out no
      longer starts a pipeline per window while the first is still out, each buying a lease);
    - for generous budgets a worker buys a small lease of units at once (at most ``burst // 20``,
      starting at ``max_lease``) and spends them locally for ``lease_seconds``. On the hot path
      (:meth:`spend`) the next lease is bought ahead, when a quarter of the units or of the period
      is left, and replaces the current one when it arrives (its rest is dropped); unspent units
      expire, so a worker is at most two leases stricter than exact, never more permissive. A
      lease running low doubles the next one for that key (up to ``burst // 20`` and
      ``max_lease * growth``: 32,768 units per 0.1 s lease by default, above one worker's rate
      for one key), one more than half unspent late in its period or at expiry halves it, so a
      hot key costs about ten Redis round trips per second whatever the request rate and its
      requests do not wait on them. Tight budgets (burst < 40) are decided unit by unit.
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        window: float = 0.0005,
        max_lease: int = 32,
        lease_seconds: float = 0.1,
        growth: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._limiter = limiter
        self._window = window
        self._max_lease = max_lease
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._leases: dict[str, _Lease] = {}
        self._growth = growth
        self._sizes: dict[str, int] = {}
        self._hungry: set[str] = set()
        self.round_trips = 0
        # requests and their waiter (None: a lease bought ahead, see _renew)
        self._pending: list[tuple[Sequence[Decision], asyncio.Future[list[RateDecision]] | None]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Future[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    def spend(self, key: str) -> Rate | None:
        """One unit of ``key`` from its local lease (nothing awaited, no decision object), or None
        when the lease does not cover it (then :meth:`decide`)."""
        now = self._clock()
        lease = self._leases.get(key)
        if lease is None or lease.expires <= now or lease.units < 1:
            self._usable(key, 1, now)  # the bookkeeping of an expired or spent lease
            return None
        lease.units -= 1
        if not lease.renewing and (lease.units <= lease.low or now >= lease.renew_at):
            self._renew(key, lease)
        return lease.limit, lease.remaining + lease.units, lease.reset_after

    def _renew(self, key: str, lease: _Lease) -> None:
        """Buy the key's next lease while this one still serves (a hot key never waits on Redis):
        a lease running low doubles the next, one more than half unspent near its end halves it."""
        lease.renewing = True
        if lease.units <= lease.low:
            self._hungry.add(key)
        elif lease.units > 2 * lease.low:
            self._sizes[key] = max(self._max_lease, self._sizes.get(key, self._max_lease) // 2)
        self._pending.append((((key, lease.rate, lease.limit, 0),), None))
        self._schedule()

    async def decide(self, requests: Sequence[Decision]) -> list[RateDecision]:
        """One decision per ``(key, rate, burst, cost)``, in order."""
        local = self._from_leases(requests)
        if local is not None:
            return local
        loop = self._loop
        if loop is None or loop.is_closed():  # looked up once: asyncio.get_running_loop() is a getpid() on 3.11
            loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[list[RateDecision]] = loop.create_future()
        self._pending.append((requests, future))
        self._schedule()
        return await future

    def _schedule(self) -> None:
        if self._running:
            return  # sent when the batch in flight returns
        if len(self._pending) >= 128:
            self._flush()
        elif self._timer is None:
            assert self._loop is not None
            self._timer = self._loop.call_later(self._window, self._flush)

    def _usable(self, key: str, cost: int, now: float) -> _Lease | None:
        lease = self._leases.get(key)
        if lease is None:
            return None
        if lease.expires <= now:
            if lease.units > 0:  # bought too much: halve the next lease (one bad period does not reset it)
                self._sizes[key] = max(self._max_lease, self._sizes.get(key, self._max_lease) // 2)
            del self._leases[key]  # halved once, not again by every request until the next lease
            return None
        if lease.units < cost:
            self._hungry.add(key)
            return None
        return lease

    def _from_leases(self, requests: Sequence[Decision]) -> list[RateDecision] | None:
        now = self._clock()
        leases = []
        for key, _, _, cost in requests:
            lease = self._usable(key, cost, now)
            if lease is None:
                return None
            leases.append(lease)
        decisions = []
        for lease, (_, _, _, cost) in zip(leases, requests, strict=True):
            lease.units -= cost
            decisions.append(RateDecision(True, lease.limit, lease.remaining + lease.units, 0.0, lease.reset_after))
        return decisions

    def _lease_size(self, key: str, burst: int) -> int:
        if burst < 40:
            return 0
        cap = min(burst // 20, self._max_lease * self._growth)
        size = min(self._sizes.get(key, self._max_lease), cap)
        if key in self._hungry:
            self._hungry.discard(key)
            size = min(size * 2, cap)
            self._sizes[key] = size
        return min(size, burst // 20)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running:
            return
        batch, self._pending = self._pending, []
        if batch:
            assert self._loop is not None
            task = self._loop.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Future[None]) -> None:
        self._running.discard(task)
        if self._pending:  # arrived while it was in flight: they have waited a round trip already
            self._flush()

    async def _run(self, batch: list[tuple[Sequence[Decision], asyncio.Future[list[RateDecision]] | None]]) -> None:
        try:
            answers = await self._decide_batch([requests for requests, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
            for _, future in batch:
                if future is not None and not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if future is not None and not future.done():
                future.set_result(answer)

    async def _decide_batch(self, batch: list[Sequence[Decision]]) -> list[list[RateDecision]]:
        """One purchase per key (all of the batch's units plus a lease); unit by unit if refused."""
        totals: dict[str, list[Any]] = {}
        for requests in batch:
            for key, rate, burst, cost in requests:
                entry = totals.setdefault(key, [rate, burst, 0])
                entry[2] += cost
        keys = list(totals)
        purchases = [(k, totals[k][0], totals[k][1], totals[k][2] + self._lease_size(k, totals[k][1])) for k in keys]
        self.round_trips += 1
        ROUND_TRIPS.inc()
        decided = dict(zip(keys, await self._limiter.acquire_many(purchases), strict=True))
        now = self._clock()
        refused: list[tuple[int, int]] = []
        answers: list[list[RateDecision]] = []
        for b, requests in enumerate(batch):
            row: list[RateDecision] = []
            for r, (key, _, _, _) in enumerate(requests):
                decision = decided[key]
                if not decision.allowed:
                    refused.append((b, r))
                row.append(decision)
            answers.append(row)
        for (key, _, _, bought), decision in zip(purchases, (decided[k] for k in keys), strict=True):
            extra = bought - totals[key][2]
            if decision.allowed and extra > 0:
                self._leases[key] = _Lease(extra, now, self._lease_seconds, totals[key][0], decision)
        if len(self._leases) > 100_000:
            self._leases.clear()
            self._sizes.clear()
            self._hungry.clear()
        if refused:
            exact = await self._limiter.acquire_many([batch[b][r] for b, r in refused])
            for (b, r), decision in zip(refused, exact, strict=True):
                answers[b][r] = decision
        return answers


def principal_key(principal: Principal) -> str:
    """The rate-limit identity: the API token, or the user for session JWTs."""
    if principal.kind == "api_token":
        return f"tok:{principal.token_id}"
    return f"usr:{principal.tenant_id}:{principal.subject}"


class RouteLimits:
    """Applies the per-principal and per-address budgets of a route class."""

    def __init__(self, limiter: BatchingLimiter, limits: RateLimits) -> None:
        self._limiter = limiter
        self._limits = limits
        self.enabled = limits.enabled

    async def check(self, route_class: str, *, address: str, identity: str | None) -> dict[str, str]:
        """The ``RateLimit-*`` headers for this request, or a 429 :class:`HttpError`: the per-address
        budget, then (when ``identity`` is given) the per-token-or-user budget."""
        spent = await self.check_address(route_class, address)
        if spent is None:
            return {}
        if identity is not None:
            spent = await self.check_identity(route_class, identity, spent)
        return rate_headers(spent)

    def address_now(self, route_class: str, address: str) -> Rate | None:
        """:meth:`check_address` when the local lease covers it (limits on), else None: nothing spent."""
        return self._limiter.spend(f"{route_class}:addr:{budget_address(address)}")

    def identity_now(self, route_class: str, identity: str, spent: Rate) -> Rate | None:
        """:meth:`check_identity` when the local lease covers it, else None: nothing spent."""
        rate = self._limiter.spend(f"{route_class}:{identity}")
        if rate is None:
            return None
        return rate if rate[1] <= spent[1] else spent

    async def check_address(self, route_class: str, address: str) -> Rate | None:
        """Spend the per-client-address budget (BEFORE authentication, so a flood of bad tokens is
        refused here without reaching auth); None when limits are off, 429 when refused."""
        if not self.enabled:
            return None
        key = f"{route_class}:addr:{budget_address(address)}"
        return self._limiter.spend(key) or await self._decide(route_class, "address", key)

    async def check_identity(self, route_class: str, identity: str, spent: Rate) -> Rate:
        """Spend the per-token-or-user budget; the tighter of it and ``spent`` (what the
        ``RateLimit-*`` headers describe)."""
        key = f"{route_class}:{identity}"
        rate = self._limiter.spend(key) or await self._decide(route_class, "principal", key)
        return rate if rate[1] <= spent[1] else spent

    async def _decide(self, route_class: str, by: str, key: str) -> Rate:
        limit = (self._limits.per_address if by == "address" else self._limits.per_principal)[route_class]
        decision = (await self._limiter.decide(((key, limit.rate, limit.burst, 1),)))[0]
        if not decision.allowed:
            self._refuse(route_class, by, decision)
        return decision.limit, decision.remaining, decision.reset_after

    def _refuse(self, route_class: str, by: str, decision: RateDecision) -> NoReturn:
        RATE_LIMITED.labels(route_class, by).inc()
        retry = decision.retry_after if math.isfinite(decision.retry_after) else 60.0
        headers = rate_headers((decision.limit, decision.remaining, decision.reset_after))
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        raise HttpError(
            429,
            "RESOURCE_EXHAUSTED",
            f"rate limit exceeded for {route_class} requests (per {by})",
            {"limit": f"{route_class}_per_{by}", "retry_after_seconds": round(retry, 3)},
            headers,
        )


def rate_headers(rate: Rate) -> dict[str, str]:
    limit, remaining, reset_after = rate
    return {
        "RateLimit-Limit": str(limit),
        "RateLimit-Remaining": str(remaining),
        "RateLimit-Reset": str(max(0, math.ceil(reset_after))),
    }


_LIMIT_HEADERS: dict[int, tuple[bytes, bytes]] = {}  # by limit: the configured bursts, a handful
_RESET_HEADERS = [(b"ratelimit-reset", b"%d" % seconds) for seconds in range(64)]


def rate_header_bytes(rate: Rate) -> list[tuple[bytes, bytes]]:
    """:func:`rate_headers` as raw ASGI headers (the fast path); the limit and reset headers are made
    once and reused, only the remaining count is formatted per request."""
    limit, remaining, reset_after = rate
    limit_header = _LIMIT_HEADERS.get(limit)
    if limit_header is None:
        if len(_LIMIT_HEADERS) >= 1024:
            _LIMIT_HEADERS.clear()
        limit_header = _LIMIT_HEADERS[limit] = (b"ratelimit-limit", b"%d" % limit)
    reset = math.ceil(reset_after)
    return [
        limit_header,
        (b"ratelimit-remaining", b"%d" % remaining),
        _RESET_HEADERS[reset] if 0 <= reset < 64 else (b"ratelimit-reset", b"%d" % max(0, reset)),
    ]
