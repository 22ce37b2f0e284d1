"""What a write may contain and what a tenant may do: the one place that answers both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ValidationLimits:
    """Per-point and per-request validation limits (all configurable, see docs/series-id.md).

    ``retained_days`` (0 = off) also refuses points before the start of the UTC day
    ``retained_days - 1`` days before today: the oldest whole day raw retention keeps for at least
    another day, so an acknowledged point never lands on a partition retention drops (ADR 0204)."""

    max_metric_length: int = 200
    max_labels: int = 32
    max_label_name_length: int = 128
    max_label_value_bytes: int = 1024
    allow_non_finite: bool = True  # NaN and +-Inf are values in Prometheus's model (ADR 0212)
    max_past_seconds: int = 30 * 86_400
    max_future_seconds: int = 600
    retained_days: int = 0
    max_points_per_request: int = 10_000
    max_request_bytes: int = 4 * 1024 * 1024


@dataclass(frozen=True)
class TenantLimits:
    """Mimir-style per-tenant limits: ingestion rate with burst, the active series ceiling, and the
    rate at which new series may be created (a series not written within the active window), with
    its burst (ADR 0211)."""

    points_per_second: float = 200_000.0
    burst_points: int = 400_000
    max_active_series: int = 1_000_000
    new_series_per_second: float = 1_000.0
    burst_new_series: int = 10_000


class LimitsProvider(Protocol):
    """Answers "what may tenant X do"."""

    def for_tenant(self, tenant_id: str) -> TenantLimits: ...


class StaticLimits:
    """Defaults for everyone, with per-tenant overrides from configuration."""

    def __init__(self, defaults: TenantLimits, overrides: Mapping[str, TenantLimits] | None = None) -> None:
        self._defaults = defaults
        self._overrides = dict(overrides or {})

    def for_tenant(self, tenant_id: str) -> TenantLimits:
        return self._overrides.get(tenant_id, self._defaults)
