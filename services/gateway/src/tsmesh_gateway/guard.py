"""Who is calling and may they: bearer-token authentication (cached) and per-route-class rate limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, Protocol

import orjson
from prometheus_client import Counter

from tsmesh_common.authn import ALLOWED_ALGORITHMS, API_TOKEN_PREFIX, MAX_TOKEN_LENGTH, Authenticator
from tsmesh_common.context import Principal
from tsmesh_common.errors import Unauthenticated
from tsmesh_common.ratelimit import RateDecision
from tsmesh_gateway.config import RateLimits
from tsmesh_gateway.http_errors import HttpError

ROUND_TRIPS = Counter(
    "tsmesh_gateway_ratelimit_round_trips_total", "Redis pipelines sent for rate-limit decisions (batches and leases)"
)
RATE_LIMITED = Counter("tsmesh_gateway_rate_limited_total", "Requests refused by a rate limit", ["route_class", "by"])


Decision = tuple[str, float, int, int]  # key, rate, burst, cost


class Limiter(Protocol):
    """A shared rate limiter (``tsmesh_common.ratelimit.RateLimiter``)."""

    async def acquire_many(self, requests: Sequence[Decision]) -> list[RateDecision]: ...


class _Lease:
    """Units of one key already paid for in Redis, spendable here until ``expires``."""

    __slots__ = ("expires", "limit", "remaining", "reset_after", "units")

    def __init__(self, units: int, expires: float, decision: RateDecision) -> None:
        self.units = units
        self.expires = expires
        self.limit = decision.limit
        self.remaining = decision.remaining
        self.reset_after = decision.reset_after


class BatchingLimiter:
    """Rate-limit decisions shared through Redis at a fraction of a round trip per request.

    - decisions of every request arriving within ``window`` go to Redis in ONE pipeline
      (``RateLimiter.acquire_many``);
    - for generous budgets a worker buys a small lease of units at once (at most ``burst // 20``,
      starting at ``max_lease``) and spends them locally for ``lease_seconds``; unspent units
      expire, so a worker is at most one lease stricter than exact, never more permissive. A lease
      used up before it expires doubles the next one for that key (up to ``burst // 20`` and
      ``max_lease * growth``), so a hot key costs a few Redis round trips per second whatever the
      request rate; a lease that expires unspent halves the size. Tight budgets (burst < 40) are
      decided unit by unit.
    """

    def __init__(
        self,
        limiter: Limiter,
        *,
        window: float = 0.0005,
        max_lease: int = 32,
        lease_seconds: float = 0.1,
        growth: int = 64,
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
        self._pending: list[tuple[Sequence[Decision], asyncio.Future[list[RateDecision]]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._running: set[asyncio.Future[None]] = set()

    def decide_now(self, requests: Sequence[Decision]) -> list[RateDecision] | None:
        """The decisions when local leases cover them all (nothing awaited), else None."""
        return self._from_leases(requests)

    async def decide(self, requests: Sequence[Decision]) -> list[RateDecision]:
        """One decision per ``(key, rate, burst, cost)``, in order."""
        local = self._from_leases(requests)
        if local is not None:
            return local
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[RateDecision]] = loop.create_future()
        self._pending.append((requests, future))
        if len(self._pending) >= 128:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._flush)
        return await future

    def _from_leases(self, requests: Sequence[Decision]) -> list[RateDecision] | None:
        now = self._clock()
        leases = []
        for key, _, _, cost in requests:
            lease = self._leases.get(key)
            if lease is None:
                return None
            if lease.expires <= now:
                if lease.units > 0:  # bought too much: halve the next lease (one bad period does not reset it)
                    self._sizes[key] = max(self._max_lease, self._sizes.get(key, self._max_lease) // 2)
                return None
            if lease.units < cost:
                self._hungry.add(key)
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
        batch, self._pending = self._pending, []
        if batch:
            task = asyncio.ensure_future(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[tuple[Sequence[Decision], asyncio.Future[list[RateDecision]]]]) -> None:
        try:
            answers = await self._decide_batch([requests for requests, _ in batch])
        except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), answer in zip(batch, answers, strict=True):
            if not future.done():
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
                self._leases[key] = _Lease(extra, now + self._lease_seconds, decision)
        if len(self._leases) > 100_000:
            self._leases.clear()
            self._sizes.clear()
            self._hungry.clear()
        if refused:
            exact = await self._limiter.acquire_many([batch[b][r] for b, r in refused])
            for (b, r), decision in zip(refused, exact, strict=True):
                answers[b][r] = decision
        return answers


def authorization_token(header: str | None) -> str:
    """The token of ``Authorization: Bearer <t>`` or ``Token <t>`` (InfluxDB style)."""
    if not header:
        raise Unauthenticated("authentication required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "token") or not token:
        raise Unauthenticated("malformed authorization header")
    return token


AUTH_REFUSALS_CACHED = Counter(
    "tsmesh_gateway_auth_refusals_cached_total", "Credentials refused from the negative cache, without asking auth"
)
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_API_TOKEN = re.compile(r"tsm_[A-Za-z0-9]+_[A-Za-z0-9_-]+")


def malformed(token: str) -> bool:
    """True when ``token`` can never authenticate, whatever auth knows: neither an API token
    (``tsm_<id>_<secret>``) nor a compact JWS whose header names an allowed algorithm and a key id."""
    if not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
        return True
    if token.startswith(API_TOKEN_PREFIX):
        return _API_TOKEN.fullmatch(token) is None
    if _JWT.fullmatch(token) is None:
        return True
    encoded = token.partition(".")[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return True
    return (
        not isinstance(header, dict)
        or header.get("alg") not in ALLOWED_ALGORITHMS
        or not isinstance(header.get("kid"), str)
    )


class PrincipalCache:
    """Verified credentials for a short while, so hot paths skip token checks; revocations evict.

    Keyed on the credential string as received (the whole ``Authorization`` value on HTTP, the
    token on the stream), so a hit costs one dict lookup. Refusals are remembered too (negative
    cache by token digest, ``refused_ttl`` seconds, at most ``refused_size`` entries, oldest evicted first), but
    only those that cannot turn into a success: malformed tokens (:func:`malformed`) and API tokens
    auth reported unknown, expired or revoked. A well-formed JWT that fails is never remembered (its
    key may be one auth published a moment ago, fetched on the next try), nor is an auth outage.
    A freshly created token is a string nobody presented before, so it is never in the cache.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        ttl: float = 5.0,
        size: int = 50_000,
        clock: Callable[[], float] = time.time,
        *,
        refused_ttl: float = 5.0,
        refused_size: int = 10_000,
    ) -> None:
        self._authenticator = authenticator
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._refused_ttl = refused_ttl
        self._refused_size = refused_size
        self._refused: OrderedDict[bytes, tuple[str, float]] = OrderedDict()  # token digest -> (message, until)
        authenticator.on_revocation(self.evict_token_id)

    def cached(self, credential: str) -> Principal | None:
        """The principal remembered for ``credential``, without awaiting anything."""
        entry = self._entries.get(credential)
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        return None

    async def authenticate_header(self, header: str | None) -> Principal:
        """The principal of an ``Authorization`` value (``Bearer <t>`` or ``Token <t>``)."""
        if header is not None:
            principal = self.cached(header)
            if principal is not None:
                return principal
        return await self._check(header, authorization_token(header))

    async def authenticate(self, token: str) -> Principal:
        """The principal of a bare token (the stream's first message)."""
        return self.cached(token) or await self._check(token, token)

    async def _check(self, credential: str | None, token: str) -> Principal:
        now = self._clock()
        digest = hashlib.blake2b(token.encode("utf-8", "backslashreplace"), digest_size=16).digest()
        refused = self._refused.get(digest)
        if refused is not None:
            if refused[1] > now:
                AUTH_REFUSALS_CACHED.inc()
                raise Unauthenticated(refused[0])  # a fresh exception: re-raising one would grow its traceback
            del self._refused[digest]
        if malformed(token):
            self._remember_refusal(digest, "invalid token", now)
            raise Unauthenticated("invalid token")
        try:
            principal = await self._authenticator.authenticate(token)
        except Unauthenticated as exc:
            if token.startswith(API_TOKEN_PREFIX):
                self._remember_refusal(digest, exc.message, now)
            raise
        until = now + self._ttl
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[credential or token] = (principal, until)
        return principal

    def _remember_refusal(self, digest: bytes, message: str, now: float) -> None:
        self._refused[digest] = (message, now + self._refused_ttl)
        while len(self._refused) > self._refused_size:
            self._refused.popitem(last=False)

    def evict_token_id(self, token_id: str) -> None:
        for credential, (principal, _) in list(self._entries.items()):
            if principal.token_id == token_id:
                del self._entries[credential]


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

    async def check(self, route_class: str, *, address: str, identity: str | None) -> dict[str, str]:
        """The ``RateLimit-*`` headers for this request, or a 429 :class:`HttpError`: the per-address
        budget, then (when ``identity`` is given) the per-token-or-user budget."""
        spent = await self.check_address(route_class, address)
        if spent is None:
            return {}
        if identity is not None:
            spent = await self.check_identity(route_class, identity, spent)
        return rate_headers(spent)

    async def check_address(self, route_class: str, address: str) -> RateDecision | None:
        """Spend the per-client-address budget (BEFORE authentication, so a flood of bad tokens is
        refused here without reaching auth); None when limits are off, 429 when refused."""
        if not self._limits.enabled:
            return None
        limit = self._limits.per_address[route_class]
        request = ((f"{route_class}:addr:{address}", limit.rate, limit.burst, 1),)
        decision = (self._limiter.decide_now(request) or await self._limiter.decide(request))[0]
        if not decision.allowed:
            self._refuse(route_class, "address", decision)
        return decision

    async def check_identity(self, route_class: str, identity: str, spent: RateDecision) -> RateDecision:
        """Spend the per-token-or-user budget; the tighter of it and ``spent`` (what the
        ``RateLimit-*`` headers describe)."""
        limit = self._limits.per_principal[route_class]
        request = ((f"{route_class}:{identity}", limit.rate, limit.burst, 1),)
        decision = (self._limiter.decide_now(request) or await self._limiter.decide(request))[0]
        if not decision.allowed:
            self._refuse(route_class, "principal", decision)
        return decision if decision.remaining <= spent.remaining else spent

    def _refuse(self, route_class: str, by: str, decision: RateDecision) -> NoReturn:
        RATE_LIMITED.labels(route_class, by).inc()
        retry = decision.retry_after if math.isfinite(decision.retry_after) else 60.0
        headers = rate_headers(decision)
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        raise HttpError(
            429,
            "RESOURCE_EXHAUSTED",
            f"rate limit exceeded for {route_class} requests (per {by})",
            {"limit": f"{route_class}_per_{by}", "retry_after_seconds": round(retry, 3)},
            headers,
        )


def rate_headers(decision: RateDecision) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(max(0, math.ceil(decision.reset_after))),
    }


def rate_header_bytes(decision: RateDecision) -> list[tuple[bytes, bytes]]:
    """:func:`rate_headers` as raw ASGI headers (the fast path)."""
    return [
        (b"ratelimit-limit", b"%d" % decision.limit),
        (b"ratelimit-remaining", b"%d" % decision.remaining),
        (b"ratelimit-reset", b"%d" % max(0, math.ceil(decision.reset_after))),
    ]
