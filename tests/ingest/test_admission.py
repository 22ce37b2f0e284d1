"""``Admission`` on real Redis: a write spends the tenant's point rate (one unit per point) before its
series are checked against the tenant's series budget, each refusal names its limit, and tenants
never share budgets."""

from __future__ import annotations

from typing import Any

import pytest

from tsmesh_common.errors import ResourceExhausted
from tsmesh_common.ratelimit import RateLimiter
from tsmesh_ingest.admission import Admission
from tsmesh_ingest.limits import StaticLimits, TenantLimits
from tsmesh_ingest.series_admission import SeriesAdmission

pytestmark = pytest.mark.integration

TIGHT = TenantLimits(points_per_second=0.001, burst_points=10, new_series_per_second=0.001, burst_new_series=3)


def admission(redis: Any, tenant_id: str, limits: TenantLimits = TIGHT) -> Admission:
    return Admission(
        StaticLimits(TenantLimits(), {tenant_id: limits}),
        RateLimiter(redis, prefix="tsmesh:test:admission"),
        SeriesAdmission(redis),
    )


async def test_points_beyond_the_tenant_rate_are_refused_with_a_retry_hint(redis_client: Any, tenant_id: str) -> None:
    admit = admission(redis_client, tenant_id)
    await admit.admit(tenant_id, [1, 1, 1, 2, 2, 2, 3, 3])  # 8 of a burst of 10, three series
    with pytest.raises(ResourceExhausted) as refused:
        await admit.admit(tenant_id, [1, 2, 3])
    assert refused.value.limit == "points_per_second"
    assert refused.value.retry_after_seconds == 60.0  # at 0.001 points/s, capped
    await admit.admit(tenant_id, [1, 2])  # what fits the burst still goes


async def test_an_empty_write_spends_nothing(redis_client: Any, tenant_id: str) -> None:
    admit = admission(redis_client, tenant_id, TenantLimits(points_per_second=0.001, burst_points=1))
    for _ in range(3):
        await admit.admit(tenant_id, [])
    await admit.admit(tenant_id, [7])


async def test_new_series_beyond_the_creation_budget_are_refused_after_the_rate(
    redis_client: Any, tenant_id: str
) -> None:
    admit = admission(redis_client, tenant_id)
    with pytest.raises(ResourceExhausted) as refused:
        await admit.admit(tenant_id, [11, 12, 13, 14])  # 4 new series, a burst of 3
    assert refused.value.limit == "new_series_per_second"


async def test_tenants_have_their_own_budgets(redis_client: Any, tenant_id: str) -> None:
    other = f"{tenant_id}-other"
    admit = Admission(
        StaticLimits(TenantLimits(), {tenant_id: TIGHT, other: TIGHT}),
        RateLimiter(redis_client, prefix="tsmesh:test:admission"),
        SeriesAdmission(redis_client),
    )
    await admit.admit(tenant_id, [1] * 10)
    with pytest.raises(ResourceExhausted):
        await admit.admit(tenant_id, [1])
    await admit.admit(other, [1] * 10)
