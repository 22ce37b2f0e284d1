"""Per-tenant admission of a validated write: ingestion rate (GCRA in Redis), then the tenant's
series budget (active series and series creation, :mod:`tsmesh_ingest.series_admission`).

All are shared by every ingest replica through Redis and stay bounded while it is unreachable.
Exceeding one raises ResourceExhausted naming the limit (``points_per_second``,
``max_active_series`` or ``new_series_per_second``) with a retry hint.
"""

from __future__ import annotations

from collections.abc import Sequence

from tsmesh_common.errors import ResourceExhausted
from tsmesh_common.ratelimit import RateLimiter
from tsmesh_ingest.limits import LimitsProvider
from tsmesh_ingest.metrics import REQUESTS_LIMITED
from tsmesh_ingest.series_admission import SeriesAdmission


class Admission:
    """Applies a tenant's limits to a validated write before anything is produced."""

    def __init__(self, limits: LimitsProvider, limiter: RateLimiter, series: SeriesAdmission) -> None:
        self._limits = limits
        self._limiter = limiter
        self._series = series

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
        await self._series.admit(tenant_id, series_ids, limits)
