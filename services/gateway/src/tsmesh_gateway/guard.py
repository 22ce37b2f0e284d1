"""Who is calling and may they: bearer-token authentication (cached) and per-route-class rate limits."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from prometheus_client import Counter

from tsmesh_common.authn import Authenticator
from tsmesh_common.context import Principal
from tsmesh_common.errors import Unauthenticated
from tsmesh_common.ratelimit import RateDecision
from tsmesh_gateway.config import RateLimits
from tsmesh_gateway.http_errors import HttpError

RATE_LIMITED = Counter("tsmesh_gateway_rate_limited_total", "Requests refused by a rate limit", ["route_class", "by"])


Decision = tuple[str, float, int, int]  # key, rate, burst, cost


class Limiter(Protocol):
    """A shared rate limiter (``tsmesh_common.ratelimit.RateLimiter``)."""

    async def acquire_many(self, requests: Sequence[Decision]) -> list[RateDecision]: ...


class BatchingLimiter:
    """Merges the rate-limit decisions of every request of one event-loop tick into ONE Redis round
    trip (``acquire_many``): under load the Redis cost per request falls with the concurrency."""

    def __init__(self, limiter: Limiter) -> None:
        self._limiter = limiter
        self._pending: list[tuple[Sequence[Decision], asyncio.Future[list[RateDecision]]]] = []

    async def decide(self, requests: Sequence[Decision]) -> list[RateDecision]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[RateDecision]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((requests, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        asyncio.ensure_future(self._run(batch))

    async def _run(self, batch: list[tuple[Sequence[Decision], asyncio.Future[list[RateDecision]]]]) -> None:
        flat = [request for requests, _ in batch for request in requests]
        try:
            decisions = await self._limiter.acquire_many(flat)
        except Exception as exc:  # noqa: BLE001 - every waiter gets the failure
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for requests, future in batch:
            if not future.done():
                future.set_result(decisions[start : start + len(requests)])
            start += len(requests)


def authorization_token(header: str | None) -> str:
    """The token of ``Authorization: Bearer <t>`` or ``Token <t>`` (InfluxDB style)."""
    if not header:
        raise Unauthenticated("authentication required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "token") or not token:
        raise Unauthenticated("malformed authorization header")
    return token


class PrincipalCache:
    """Verified tokens for a short while, so hot paths skip signature checks; revocations evict."""

    def __init__(
        self, authenticator: Authenticator, ttl: float = 5.0, size: int = 50_000, clock: Callable[[], float] = time.time
    ) -> None:
        self._authenticator = authenticator
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._entries: dict[str, tuple[Principal, float]] = {}
        authenticator.on_revocation(self.evict_token_id)

    async def authenticate(self, token: str) -> Principal:
        now = self._clock()
        entry = self._entries.get(token)
        if entry is not None and entry[1] > now:
            return entry[0]
        principal = await self._authenticator.authenticate(token)
        until = now + self._ttl
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        if len(self._entries) >= self._size:
            self._entries.clear()
        self._entries[token] = (principal, until)
        return principal

    def evict_token_id(self, token_id: str) -> None:
        for token, (principal, _) in list(self._entries.items()):
            if principal.token_id == token_id:
                del self._entries[token]


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
        """The ``RateLimit-*`` headers for this request, or a 429 :class:`HttpError`.

        Both budgets (per token or user, per client address) are decided in the same round trip."""
        if not self._limits.enabled:
            return {}
        names: list[str] = []
        requests: list[Decision] = []
        if identity is not None:
            limit = self._limits.per_principal[route_class]
            names.append("principal")
            requests.append((f"{route_class}:{identity}", limit.rate, limit.burst, 1))
        limit = self._limits.per_address[route_class]
        names.append("address")
        requests.append((f"{route_class}:addr:{address}", limit.rate, limit.burst, 1))
        decisions = await self._limiter.decide(requests)
        for name, decision in zip(names, decisions, strict=True):
            if not decision.allowed:
                return self._refuse(route_class, name, decision)
        return rate_headers(min(decisions, key=lambda d: d.remaining))

    def _refuse(self, route_class: str, by: str, decision: RateDecision) -> dict[str, str]:
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
