"""Per-point validation and series-id assignment of a write request.

A (metric, labels) pair seen before is valid and has its id cached, so the steady-state per-point
work is one labels tuple (in map order: a different order is only a cache miss, the id hashes the
sorted labels), one dict lookup and the timestamp/value checks.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.series_id import LabelItems, SeriesIdCache

METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
NS = 1_000_000_000


@dataclass
class Validated:
    """The outcome of one request: accepted points with their ids, and per-point errors."""

    points: list[common_pb2.Point] = field(default_factory=list)
    series_ids: list[int] = field(default_factory=list)
    errors: list[ingest_pb2.PointError] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def reject(self, index: int, field_name: str, reason: str, code: str) -> None:
        self.errors.append(ingest_pb2.PointError(index=index, field=field_name, reason=reason))
        self.reasons.append(code)


class Validator:
    """Checks points against :class:`ValidationLimits` and assigns series ids via the cache."""

    def __init__(self, limits: ValidationLimits, cache: SeriesIdCache, clock: Callable[[], float] = time.time) -> None:
        self._limits = limits
        self._cache = cache
        self._clock = clock

    def check_request(self, request: ingest_pb2.WriteRequest) -> None:
        """Request-wide limits: these refuse the whole request with INVALID_ARGUMENT."""
        if len(request.points) > self._limits.max_points_per_request:
            raise InvalidArgument(
                "points", f"at most {self._limits.max_points_per_request} points per request, got {len(request.points)}"
            )
        size = request.ByteSize()
        if size > self._limits.max_request_bytes:
            raise InvalidArgument("points", f"at most {self._limits.max_request_bytes} bytes per request, got {size}")

    def validate(
        self, tenant_id: str, points: Sequence[common_pb2.Point], base_index: int = 0, out: Validated | None = None
    ) -> Validated:
        """Validate ``points`` (indexes reported from ``base_index``), appending to ``out``."""
        result = out if out is not None else Validated()
        lim = self._limits
        now_ns = int(self._clock() * NS)
        lo = now_ns - lim.max_past_seconds * NS
        hi = now_ns + lim.max_future_seconds * NS
        allow_non_finite = lim.allow_non_finite
        known = self._cache
        accepted_points = result.points
        accepted_ids = result.series_ids
        for offset, point in enumerate(points):
            index = base_index + offset
            ts = point.timestamp_ns
            if ts < lo or ts > hi:
                reason = "too old (before the retention window)" if ts < lo else "too far in the future"
                result.reject(index, "timestamp_ns", reason, "timestamp_out_of_range")
                continue
            if not allow_non_finite and not math.isfinite(point.value):
                result.reject(index, "value", "must be finite (NaN and infinities are refused)", "non_finite_value")
                continue
            labels: LabelItems = tuple(point.labels.items())
            metric = point.metric
            sid = known.peek(tenant_id, metric, labels)
            if sid is None:
                problem = self._check_identity(metric, labels)
                if problem is not None:
                    result.reject(index, problem[0], problem[1], problem[2])
                    continue
                sid = known.get(tenant_id, metric, labels)
            accepted_points.append(point)
            accepted_ids.append(sid)
        return result

    def _check_identity(self, metric: str, labels: LabelItems) -> tuple[str, str, str] | None:
        lim = self._limits
        if not metric:
            return ("metric", "must not be empty", "invalid_metric")
        if len(metric) > lim.max_metric_length:
            return ("metric", f"longer than {lim.max_metric_length} characters", "metric_too_long")
        if METRIC_RE.fullmatch(metric) is None:
            return ("metric", "must match [a-zA-Z_:][a-zA-Z0-9_:]*", "invalid_metric")
        if len(labels) > lim.max_labels:
            return ("labels", f"at most {lim.max_labels} labels, got {len(labels)}", "too_many_labels")
        for name, value in labels:
            if len(name) > lim.max_label_name_length:
                return (
                    "labels",
                    f"label name longer than {lim.max_label_name_length} characters",
                    "label_name_too_long",
                )
            if LABEL_RE.fullmatch(name) is None:
                return ("labels", f"label name {name[:64]!r} must match [a-zA-Z_][a-zA-Z0-9_]*", "invalid_label_name")
            if len(value) * 4 > lim.max_label_value_bytes and len(value.encode("utf-8")) > lim.max_label_value_bytes:
                return (
                    "labels",
                    f"value of {name!r} longer than {lim.max_label_value_bytes} bytes",
                    "label_value_too_long",
                )
        return None
