"""Per-point validation and series-id assignment of a write request.

Each accepted point is serialized once (upb, C): those bytes are both what goes to Kafka (the
producer concatenates them into PointBatch records, nothing is rebuilt) and, minus the timestamp
and value fields at their tail, the cache key of the point's identity. A (metric, labels) encoding
seen before is valid and has its id cached, so the steady-state per-point work is one serialization,
one slice, one dict lookup and the timestamp/value checks (ADR 0203).
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
from tsmesh_ingest.series_id import LabelItems, SeriesIdCache, series_id

METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
NS = 1_000_000_000
DAY_NS = 86_400 * NS
# Timestamps at or above 2**56 ns (1972) are 9-byte varints: the point's tail is then exactly the
# 10-byte timestamp field, plus the 9-byte value field when present (tag 0x21 nine bytes from the end;
# absent, that byte is inside the varint and has its continuation bit set).
_FIXED_VARINT_TS = 1 << 56
_VALUE_TAG = 0x21


@dataclass
class Validated:
    """The outcome of one request: accepted points with their ids, and per-point errors."""

    points: list[common_pb2.Point] = field(default_factory=list)
    series_ids: list[int] = field(default_factory=list)
    raws: list[bytes] = field(default_factory=list)
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
        """Validate ``points`` (indexes reported from ``base_index``), appending to ``out``.

        Unknown fields must have been discarded (``WriteRequest.DiscardUnknownFields``) so that a
        point's serialization is exactly its four known fields."""
        result = out if out is not None else Validated()
        lim = self._limits
        now_ns = int(self._clock() * NS)
        lo = now_ns - lim.max_past_seconds * NS
        if lim.retained_days > 0:
            lo = max(lo, (now_ns // DAY_NS - (lim.retained_days - 1)) * DAY_NS)
        hi = now_ns + lim.max_future_seconds * NS
        allow_non_finite = lim.allow_non_finite
        by_encoding = self._cache.encodings(tenant_id)
        accepted_points = result.points
        accepted_ids = result.series_ids
        accepted_raws = result.raws
        isfinite = math.isfinite
        for offset, point in enumerate(points):
            ts = point.timestamp_ns
            if ts < lo or ts > hi:
                reason = "too old (before the retention window)" if ts < lo else "too far in the future"
                result.reject(base_index + offset, "timestamp_ns", reason, "timestamp_out_of_range")
                continue
            if not allow_non_finite and not isfinite(point.value):
                result.reject(
                    base_index + offset, "value", "must be finite (NaN and infinities are refused)", "non_finite_value"
                )
                continue
            raw = point.SerializeToString()
            if ts >= _FIXED_VARINT_TS:
                key = raw[: -19 if raw[-9] == _VALUE_TAG else -10]
                sid = by_encoding.get(key)
                if sid is None:
                    sid = self._identify(tenant_id, point, key, base_index + offset, result)
                    if sid is None:
                        continue
            else:
                sid = self._identify(tenant_id, point, None, base_index + offset, result)
                if sid is None:
                    continue
            accepted_points.append(point)
            accepted_ids.append(sid)
            accepted_raws.append(raw)
        return result

    def _identify(
        self, tenant_id: str, point: common_pb2.Point, key: bytes | None, index: int, result: Validated
    ) -> int | None:
        """A cache miss: check the identity, hash it, and cache it under ``key`` when ``key`` is
        exactly the canonical encoding of (metric, labels) (so a cached key names one identity)."""
        labels: LabelItems = tuple(point.labels.items())
        metric = point.metric
        problem = self._check_identity(metric, labels)
        if problem is not None:
            result.reject(index, problem[0], problem[1], problem[2])
            return None
        if key is not None and key == common_pb2.Point(metric=metric, labels=point.labels).SerializeToString():
            sid = series_id(tenant_id, metric, labels)
            self._cache.remember(tenant_id, key, sid)
            return sid
        return self._cache.get(tenant_id, metric, labels)

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
