"""An asyncio circuit breaker: fail fast while a dependency is down, recover by itself.

closed --(``failure_threshold`` consecutive failures)--> open --(``reset_seconds``)--> half-open
half-open lets one trial call through: success closes, failure re-opens.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from prometheus_client import Gauge

from tsmesh_common.errors import Unavailable

T = TypeVar("T")

BREAKER_STATE = Gauge("tsmesh_circuit_breaker_open", "1 while the named circuit breaker is open", ["breaker"])


class CircuitBreaker:
    """Counts consecutive failures of the exceptions in ``failures``; other errors pass through."""

    def __init__(
        self,
        name: str,
        *,
        failures: tuple[type[BaseException], ...],
        failure_threshold: int = 5,
        reset_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self._failures = failures
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._clock = clock
        self._consecutive = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False
        self._gauge = BREAKER_STATE.labels(name)
        self._gauge.set(0)

    @property
    def is_open(self) -> bool:
        return self._opened_at is not None and self._clock() - self._opened_at < self._reset

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` unless the breaker is open, in which case raise :class:`Unavailable` at once."""
        trial = False
        if self._opened_at is not None:
            if self._clock() - self._opened_at < self._reset or self._trial_in_flight:
                raise Unavailable(f"{self.name} unavailable (circuit open)")
            self._trial_in_flight = trial = True
        try:
            result = await fn()
        except self._failures:
            self._record_failure()
            raise
        finally:
            if trial:
                self._trial_in_flight = False
        self._consecutive = 0
        if self._opened_at is not None:
            self._opened_at = None
            self._gauge.set(0)
        return result

    def _record_failure(self) -> None:
        self._consecutive += 1
        if self._consecutive >= self._threshold or self._opened_at is not None:
            self._opened_at = self._clock()
            self._gauge.set(1)
