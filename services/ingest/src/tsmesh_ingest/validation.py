"""Per-point validation and series-id assignment of a write request, read from its wire bytes.

The servicer gets each request as received (no message is parsed). Each point's bytes are both
what goes to Kafka (with their length prefix they are a ``PointBatch.points`` entry minus its tag:
the producer joins them, nothing is rebuilt) and, minus the timestamp and value fields at their
tail, the cache key of the point's identity (canonical encoding of (metric, labels) -> series id).
The steady-state per-point Python is three slices and one dict lookup while walking the bytes
(:mod:`tsmesh_ingest.wirewalk`); the timestamp and value checks then read the 19-byte tails of all
the points at once in numpy (this extends ADR 0230's serialize-once path).

A cache hit is trusted because a key is cached only when it equals the serialization of a fresh
``Point(metric, labels)`` of a valid identity: a point whose bytes are such a key followed by exactly
a timestamp field with a 9-byte varint (timestamps from 2**56 ns, 1972) and optionally an 8-byte
value field *is* that identity with that timestamp and value, and nothing else (no unknown field
and no invalid UTF-8 can hide in bytes that parse completely as canonical known fields), so its
bytes decode to the clean point. Keys are cached as clients send them: canonical up to the order of
the label entries (each process's upb has its own map order). Every other point (a miss, another tail) takes the
message path: parsed by upb, the same checks, unknown fields discarded. A request that is not a
plain sequence of points (an unknown field, too many points, malformed) is parsed by upb first.

What is accepted is storable (ADR 0210): invalid UTF-8 refuses the request naming the point and
field, a NUL in a label value refuses the point (names are ASCII patterns), and the timestamp window
never leaves the days whose partition bounds fit in bigint. Cached identities were checked when
cached, so none of this costs the steady state anything.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from google.protobuf.message import DecodeError
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.protowire import varint
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.series_id import LabelItems, SeriesIdCache, series_id
from tsmesh_ingest.wirewalk import (
    PAD,
    Walked,
    bad_utf8_field,
    encodes_identity,
    identity_prefix,
    request_points,
    tails,
    unframe,
    walk,
)

METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
NS = 1_000_000_000
DAY_NS = 86_400 * NS
# The timestamps whose day partition's bounds (ts.points_pYYYYMMDD, [day start, next day start) in
# bigint ns) PostgreSQL can hold: whatever the configured window, nothing outside is accepted.
FIRST_STORABLE_NS = -((2**63) // DAY_NS) * DAY_NS
LAST_STORABLE_NS = ((2**63 - 1) // DAY_NS) * DAY_NS - 1


class Problem(NamedTuple):
    """Why a point is refused: the field at fault, the reason told to the caller, the metric label."""

    field: str
    reason: str
    code: str


_TOO_OLD = Problem("timestamp_ns", "too old (before the retention window)", "timestamp_out_of_range")
_TOO_NEW = Problem("timestamp_ns", "too far in the future", "timestamp_out_of_range")
_NON_FINITE = Problem("value", "must be finite (NaN and infinities are refused)", "non_finite_value")


@dataclass
class Validated:
    """The outcome of one request: accepted points with their ids, and per-point errors.

    ``framed[i]`` is accepted point i as a length varint plus its serialization (a
    ``PointBatch.points`` entry without its tag), ``series_ids[i]`` its id; ``received`` counts the
    request's points; errors are in index order.
    """

    framed: list[bytes] = field(default_factory=list)
    series_ids: list[int] = field(default_factory=list)
    received: int = 0
    errors: list[ingest_pb2.PointError] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return len(self.series_ids)

    @property
    def points(self) -> list[common_pb2.Point]:
        """The accepted points decoded again (tests and diagnostics: the write path never builds them)."""
        if not self.framed:
            return []
        return list(common_pb2.PointBatch.FromString(b"\x12" + b"\x12".join(self.framed)).points)

    def reject(self, index: int, problem: Problem) -> None:
        self.errors.append(ingest_pb2.PointError(index=index, field=problem.field, reason=problem.reason))
        self.reasons.append(problem.code)


class Validator:
    """Checks points against :class:`ValidationLimits` and assigns series ids via the cache."""

    def __init__(self, limits: ValidationLimits, cache: SeriesIdCache, clock: Callable[[], float] = time.time) -> None:
        self._limits = limits
        self._cache = cache
        self._clock = clock

    def validate_request(self, tenant_id: str, request: bytes, base_index: int = 0) -> Validated:
        """Request-wide limits (these refuse the whole request with INVALID_ARGUMENT, as does a
        request that is not a ``WriteRequest``), then every point of the serialized ``request``,
        errors indexed from ``base_index``."""
        lim = self._limits
        if len(request) > lim.max_request_bytes:
            raise InvalidArgument("points", f"at most {lim.max_request_bytes} bytes per request, got {len(request)}")
        by_encoding = self._cache.encodings(tenant_id)
        padded = PAD + request
        walked = walk(padded, by_encoding, lim.max_points_per_request)
        if walked is None:  # not only points, or too many: upb decides, unknown fields are dropped
            try:
                message = ingest_pb2.WriteRequest.FromString(request)
            except DecodeError:
                raise _undecodable_request(request, base_index) from None
            count = len(message.points)
            if count > lim.max_points_per_request:
                raise InvalidArgument("points", f"at most {lim.max_points_per_request} points per request, got {count}")
            message.DiscardUnknownFields()
            padded = PAD + message.SerializeToString()
            walked = walk(padded, by_encoding, count)
            if walked is None:
                raise AssertionError("a parsed WriteRequest without unknown fields is a sequence of points")
        return self._validate(tenant_id, walked, base_index)

    def validate(self, tenant_id: str, points: Iterable[common_pb2.Point], base_index: int = 0) -> Validated:
        """Per-point validation of ``points`` alone (no request-wide limit)."""
        request = ingest_pb2.WriteRequest(points=points)
        walked = walk(PAD + request.SerializeToString(), self._cache.encodings(tenant_id), len(request.points))
        if walked is None:
            raise AssertionError("a serialized WriteRequest is a sequence of points")
        return self._validate(tenant_id, walked, base_index)

    def _window(self) -> tuple[int, int]:
        """The accepted timestamps, inclusive: [now - max past (and the retention day), now + max
        future], within the storable range."""
        lim = self._limits
        now_ns = int(self._clock() * NS)
        lo = now_ns - lim.max_past_seconds * NS
        if lim.retained_days > 0:
            lo = max(lo, (now_ns // DAY_NS - (lim.retained_days - 1)) * DAY_NS)
        return max(lo, FIRST_STORABLE_NS), min(now_ns + lim.max_future_seconds * NS, LAST_STORABLE_NS)

    def _validate(self, tenant_id: str, walked: Walked, base_index: int) -> Validated:
        lo, hi = self._window()
        verdicts: dict[int, Problem | None] = {}
        if walked.tails:
            shaped, ts, non_finite = tails(walked.tails)
            trouble = ~shaped | (ts < lo) | (ts > hi)
            if not self._limits.allow_non_finite:
                trouble |= non_finite
            if np.logical_or.reduce(trouble):
                for k in np.flatnonzero(trouble).tolist():
                    if not shaped[k]:  # not the expected tail after all: the message path decides
                        verdicts[k] = None
                    elif ts[k] < lo or ts[k] > hi:
                        verdicts[k] = _TOO_OLD if ts[k] < lo else _TOO_NEW
                    else:
                        verdicts[k] = _NON_FINITE
        received = len(walked.series_ids) + len(walked.misses)
        if not walked.misses and not verdicts:  # the steady state: every point a valid cache hit
            return Validated(walked.framed, walked.series_ids, received)
        return self._merge(tenant_id, walked, verdicts, (lo, hi), base_index)

    def _merge(
        self,
        tenant_id: str,
        walked: Walked,
        verdicts: dict[int, Problem | None],
        window: tuple[int, int],
        base_index: int,
    ) -> Validated:
        """The result in point order from the walked hits (minus those with a verdict), the
        rejected ones and the points that take the message path (misses, verdict None)."""
        received = len(walked.series_ids) + len(walked.misses)
        missed = {i for i, _ in walked.misses}
        hit_index = [i for i in range(received) if i not in missed]
        message_path = list(walked.misses)
        problems: list[tuple[int, Problem]] = []
        for k, verdict in verdicts.items():
            if verdict is None:
                framed = walked.framed[k]
                message_path.append((hit_index[k], unframe(framed)))
            else:
                problems.append((hit_index[k], verdict))
        accepted = [
            (hit_index[k], sid, framed)
            for k, (sid, framed) in enumerate(zip(walked.series_ids, walked.framed, strict=True))
            if k not in verdicts
        ]
        by_encoding = self._cache.encodings(tenant_id)
        for i, wire in sorted(message_path):
            try:
                point = common_pb2.Point.FromString(wire)
            except DecodeError:
                raise _undecodable(base_index + i, wire) from None
            outcome = self._check_point(tenant_id, wire, point, window, by_encoding)
            if isinstance(outcome, Problem):
                problems.append((i, outcome))
            else:
                accepted.append((i, *outcome))
        accepted.sort(key=lambda entry: entry[0])
        problems.sort(key=lambda entry: entry[0])
        result = Validated([framed for _, _, framed in accepted], [sid for _, sid, _ in accepted], received)
        for i, problem in problems:
            result.reject(base_index + i, problem)
        return result

    def _check_point(
        self,
        tenant_id: str,
        wire: bytes,
        point: common_pb2.Point,
        window: tuple[int, int],
        by_encoding: dict[bytes, int],
    ) -> tuple[int, bytes] | Problem:
        """The message path of one point (``wire`` as received, ``point`` parsed from it): its id
        and framed bytes (unknown fields dropped), or what is wrong with it."""
        lo, hi = window
        ts = point.timestamp_ns
        if ts < lo or ts > hi:
            return _TOO_OLD if ts < lo else _TOO_NEW
        if not self._limits.allow_non_finite and not math.isfinite(point.value):
            return _NON_FINITE
        point.DiscardUnknownFields()
        raw = point.SerializeToString()
        key = identity_prefix(wire)
        sid = by_encoding.get(key) if key is not None else None
        if sid is None:
            identified = self._identify(tenant_id, point, key)
            if isinstance(identified, Problem):
                return identified
            sid = identified
        return sid, varint(len(raw)) + raw

    def _identify(self, tenant_id: str, point: common_pb2.Point, key: bytes | None) -> int | Problem:
        """A cache miss: check the identity, hash it, and cache it under ``key`` (what the walk
        will look up for the next such point) when ``key`` encodes exactly (metric, labels)."""
        labels: LabelItems = tuple(point.labels.items())
        metric = point.metric
        problem = self._check_identity(metric, labels)
        if problem is not None:
            return problem
        if key is not None and encodes_identity(key, metric, labels):
            sid = series_id(tenant_id, metric, labels)
            self._cache.remember(tenant_id, key, sid)
            return sid
        return self._cache.get(tenant_id, metric, labels)

    def _check_identity(self, metric: str, labels: LabelItems) -> Problem | None:
        lim = self._limits
        if not metric:
            return Problem("metric", "must not be empty", "invalid_metric")
        if len(metric) > lim.max_metric_length:
            return Problem("metric", f"longer than {lim.max_metric_length} characters", "metric_too_long")
        if METRIC_RE.fullmatch(metric) is None:
            return Problem("metric", "must match [a-zA-Z_:][a-zA-Z0-9_:]*", "invalid_metric")
        if len(labels) > lim.max_labels:
            return Problem("labels", f"at most {lim.max_labels} labels, got {len(labels)}", "too_many_labels")
        for name, value in sorted(labels):  # the same label is named whatever the map order
            if len(name) > lim.max_label_name_length:
                return Problem(
                    "labels",
                    f"label name longer than {lim.max_label_name_length} characters",
                    "label_name_too_long",
                )
            if LABEL_RE.fullmatch(name) is None:
                return Problem(
                    "labels", f"label name {name[:64]!r} must match [a-zA-Z_][a-zA-Z0-9_]*", "invalid_label_name"
                )
            if len(value) * 4 > lim.max_label_value_bytes and len(value.encode("utf-8")) > lim.max_label_value_bytes:
                return Problem(
                    "labels",
                    f"value of {name!r} longer than {lim.max_label_value_bytes} bytes",
                    "label_value_too_long",
                )
            if "\x00" in value:  # valid UTF-8, but neither jsonb nor text can hold it (ADR 0210)
                return Problem("labels", f"value of {name!r} must not contain NUL (U+0000)", "invalid_label_value")
        return None


def _undecodable(index: int, wire: bytes) -> InvalidArgument:
    """The refusal of a request whose point ``index`` (bytes ``wire``) upb cannot parse."""
    field = bad_utf8_field(wire)
    if field is not None:
        return InvalidArgument(f"points[{index}].{field}", "not valid UTF-8")
    return InvalidArgument("points", f"point {index} is not a valid Point")


def _undecodable_request(request: bytes, base_index: int) -> InvalidArgument:
    """The refusal of a request upb cannot parse: its first unparsable point when there is one."""
    for index, payload in enumerate(request_points(request), start=base_index):
        try:
            common_pb2.Point.FromString(payload)
        except DecodeError:
            return _undecodable(index, payload)
    return InvalidArgument("points", "not a valid WriteRequest")
