"""Fair shares of a worker's WebSockets (ADR 0453): sockets per client address, sockets per token, and
new handshakes per client address.

A worker holds at most ``max_connections`` sockets; without these budgets a few clients (or a few
tenants' tokens) could hold them all. Every check is a dict lookup and a counter in this process
(no Redis): it runs once per handshake or authentication, never per message. The budgets are per
worker process, so a gateway of W workers admits up to W times each of them.

A refusal names its limit and says when to retry: the lean listener answers HTTP 429 with
``Retry-After`` before the upgrade; an upgraded socket (Granian's port, or a token over its budget,
known only once authenticated) is closed with :data:`CLOSE_LIMITED` and the same text as reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from tsmesh_common.ratelimit import LocalGcra
from tsmesh_gateway.clientaddr import budget_address
from tsmesh_gateway.config import StreamConfig

CLOSE_LIMITED = 4429  # the WebSocket counterpart of HTTP 429
GATED = "tsmesh.gated"  # scope key: the listener already spent this handshake's budget before the upgrade
HELD_RETRY_AFTER_SECONDS = 5  # a socket budget frees when a socket closes: no better hint exists

LIMITED = Counter(
    "tsmesh_gateway_ws_limited_total",
    "WebSocket handshakes or authentications refused by a fairness limit",
    ["limit"],
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a socket is refused: the limit's name, a message for the client, whole seconds to wait."""

    limit: str
    message: str
    retry_after: int

    @property
    def reason(self) -> str:
        """The close reason (at most 123 bytes in a close frame)."""
        return f"{self.limit} (retry after {self.retry_after} s): {self.message}"[:123]


class SocketLimits:
    """This worker's per-address and per-token socket budgets and its handshake rate per address."""

    def __init__(self, cfg: StreamConfig, clock: Callable[[], float] | None = None) -> None:
        self._per_address = cfg.max_connections_per_address
        self._per_token = cfg.max_connections_per_token
        rate = cfg.handshakes_per_address
        self._burst = rate.burst
        self._interval_us = max(1, round(1_000_000 / rate.rate))
        self._tolerance_us = self._interval_us * rate.burst
        self._handshakes = LocalGcra(clock) if clock is not None else LocalGcra()
        self.by_address: dict[str, int] = {}

    def handshake(self, address: str) -> Refusal | None:
        """A new socket from ``address``: spend one handshake and check the address's socket budget."""
        key = budget_address(address)
        if self.by_address.get(key, 0) >= self._per_address:
            return _refused(
                "max_connections_per_address",
                f"at most {self._per_address} WebSockets per client address on this gateway worker",
                HELD_RETRY_AFTER_SECONDS,
            )
        decision = self._handshakes.acquire(key, self._interval_us, self._tolerance_us, 1, self._burst)
        if not decision.allowed:
            return _refused(
                "handshakes_per_address",
                f"more than {self._burst} WebSocket handshakes at once from one client address",
                max(1, math.ceil(decision.retry_after)),
            )
        return None

    def opened(self, address: str) -> str:
        """Count a socket of ``address``; returns the key to give back to :meth:`closed`."""
        key = budget_address(address)
        self.by_address[key] = self.by_address.get(key, 0) + 1
        return key

    def closed(self, key: str) -> None:
        left = self.by_address.get(key, 0) - 1
        if left > 0:
            self.by_address[key] = left
        else:
            self.by_address.pop(key, None)

    def token(self, open_for_token: int) -> Refusal | None:
        """A socket authenticating with a token that already holds ``open_for_token`` other sockets."""
        if open_for_token < self._per_token:
            return None
        return _refused(
            "max_connections_per_token",
            f"at most {self._per_token} WebSockets per token on this gateway worker",
            HELD_RETRY_AFTER_SECONDS,
        )


def _refused(limit: str, message: str, retry_after: int) -> Refusal:
    LIMITED.labels(limit).inc()
    return Refusal(limit, message, retry_after)
