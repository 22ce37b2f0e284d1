"""Per-point validation and series-id assignment of a write request, read from its wire bytes.

The servicer gets each request as received (no message is parsed). Each point's bytes are both
what goes to Kafka (with their length prefix they are a ``PointBatch.points`` entry minus its tag:
the producer joins them, nothing is rebuilt) and, minus the timestamp and value fields at their
tail, the cache key of the point's identity (canonical encoding of (metric, labels) -> series id).
The steady-state per-point Python is three slices and one dict lookup while walking the bytes; the
timestamp and value checks then read the 19-byte tails of all the points at once in numpy (this
extends ADR 0230's serialize-once path).

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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from google.protobuf.message import DecodeError
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.protowire import varint
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.series_id import LabelItems, SeriesIdCache, series_id

METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
NS = 1_000_000_000
DAY_NS = 86_400 * NS
# The timestamps whose day partition's bounds (ts.points_pYYYYMMDD, [day start, next day start) in
# bigint ns) PostgreSQL can hold: whatever the configured window, nothing outside is accepted.
FIRST_STORABLE_NS = -((2**63) // DAY_NS) * DAY_NS
LAST_STORABLE_NS = ((2**63 - 1) // DAY_NS) * DAY_NS - 1
# Timestamps at or above 2**56 ns are 9-byte varints: a point's tail is then exactly the 10-byte
# timestamp field, plus the 9-byte value field when present (tag 0x21 nine bytes from the end;
# absent, that byte is inside the varint and has its continuation bit set).
_FIXED_VARINT_TS = 1 << 56
_TS_TAG = 0x18
_VALUE_TAG = 0x21
_TAIL = 19
# Put before the request's bytes so that reading a point's last 19 bytes never starts before them.
_PAD = bytes(_TAIL)
_ZERO_VALUE = b"\x21" + bytes(8)
# A point's tail: the timestamp field with a 9-byte varint, then the value field (little-endian f64).
_TAIL_FIELDS = np.dtype([("ts_tag", "u1"), ("varint", "u1", (9,)), ("value_tag", "u1"), ("value", "<f8")])
_SHIFTS = np.arange(9, dtype=np.uint64) * np.uint64(7)


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


@dataclass
class _Walked:
    """The points of a request whose identity prefix was a cached key (in order): their ids,
    framed bytes and 19-byte tails (timestamp and value fields); (index, bytes) of the others."""

    series_ids: list[int]
    framed: list[bytes]
    tails: list[bytes]
    misses: list[tuple[int, bytes]]


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
        padded = _PAD + request
        walked = _walk(padded, by_encoding, lim.max_points_per_request)
        if walked is None:  # not only points, or too many: upb decides, unknown fields are dropped
            try:
                message = ingest_pb2.WriteRequest.FromString(request)
            except DecodeError:
                raise _undecodable_request(request, base_index) from None
            count = len(message.points)
            if count > lim.max_points_per_request:
                raise InvalidArgument("points", f"at most {lim.max_points_per_request} points per request, got {count}")
            message.DiscardUnknownFields()
            padded = _PAD + message.SerializeToString()
            walked = _walk(padded, by_encoding, count)
            if walked is None:
                raise AssertionError("a parsed WriteRequest without unknown fields is a sequence of points")
        return self._validate(tenant_id, walked, base_index)

    def validate(self, tenant_id: str, points: Iterable[common_pb2.Point], base_index: int = 0) -> Validated:
        """Per-point validation of ``points`` alone (no request-wide limit)."""
        request = ingest_pb2.WriteRequest(points=points)
        walked = _walk(_PAD + request.SerializeToString(), self._cache.encodings(tenant_id), len(request.points))
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

    def _validate(self, tenant_id: str, walked: _Walked, base_index: int) -> Validated:
        lo, hi = self._window()
        verdicts: dict[int, Problem | None] = {}
        if walked.tails:
            shaped, ts, non_finite = _tails(walked.tails)
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
        walked: _Walked,
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
                message_path.append((hit_index[k], framed[_varint_at(framed, 0)[1] :]))
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
        key = _identity_prefix(wire)
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
        if key is not None and _encodes_identity(key, metric, labels):
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


def _walk(data: bytes, by_encoding: dict[bytes, int], limit: int) -> _Walked | None:
    """One pass over ``_PAD`` + WriteRequest bytes: the id, framed bytes and tail of each point
    whose bytes before its timestamp and value fields are a cached key, and the others' index and
    bytes. None when the bytes are not a sequence of at most ``limit`` points (a field other than
    ``points``, more points, or malformed: a point running past the end leaves ``pos`` beyond it)."""
    get = by_encoding.get
    ids: list[int] = []
    framed: list[bytes] = []
    tails: list[bytes] = []
    misses: list[tuple[int, bytes]] = []
    add_id, add_framed, add_tail = ids.append, framed.append, tails.append
    n = len(data)
    pos = _TAIL
    try:
        for _ in range(limit):
            if pos >= n:
                break
            if data[pos] != 0x0A:  # WriteRequest.points
                return None
            size = data[pos + 1]
            if size < 0x80:
                start = pos + 2
            elif data[pos + 2] < 0x80:
                size = (size & 0x7F) | (data[pos + 2] << 7)
                start = pos + 3
            else:
                size, start = _varint_at(data, pos + 1)
            end = start + size
            # The literals are the hot loop's: 0x21 is the value field's tag, 19 and 10 the tail lengths.
            if data[end - 9] == 0x21:
                sid = get(data[start : end - 19])
                if sid is not None:
                    add_id(sid)
                    add_framed(data[pos + 1 : end])
                    add_tail(data[end - 19 : end])
                    pos = end
                    continue
            else:  # a value of 0.0 is not written: the tail is the timestamp field alone
                sid = get(data[start : end - 10])
                if sid is not None:
                    add_id(sid)
                    add_framed(data[pos + 1 : end])
                    add_tail(data[end - 10 : end] + _ZERO_VALUE)
                    pos = end
                    continue
            misses.append((len(ids) + len(misses), data[start:end]))
            pos = end
    except (IndexError, ValueError):  # truncated, or a length varint longer than 10 bytes
        return None
    if pos != n:
        return None
    return _Walked(ids, framed, tails, misses)


def _identity_prefix(wire: bytes) -> bytes | None:
    """The bytes of a serialized point before its tail (the walk's lookup key) when the tail is
    exactly a timestamp field with a 9-byte varint plus, optionally, a value field; else None."""
    cut = len(wire) - (19 if len(wire) >= 19 and wire[-9] == _VALUE_TAG else 10)
    if cut < 0 or wire[cut] != _TS_TAG or wire[cut + 9] >= 0x80:
        return None
    if any(byte < 0x80 for byte in wire[cut + 1 : cut + 9]):
        return None
    return wire[:cut]


def _encodes_identity(key: bytes, metric: str, labels: LabelItems) -> bool:
    """Whether ``key`` is the canonical encoding of (metric, labels) up to the order of the label
    entries (a client's map order is its own): the metric field, then each entry exactly once."""
    head = common_pb2.Point(metric=metric).SerializeToString()
    entries = {common_pb2.Point(labels={name: value}).SerializeToString() for name, value in labels}
    if not key.startswith(head) or len(key) != len(head) + sum(map(len, entries)):
        return False
    pos = len(head)
    try:
        while pos < len(key):
            size, start = _varint_at(key, pos + 1)
            entry = key[pos : start + size]
            if entry not in entries:
                return False
            entries.remove(entry)
            pos = start + size
    except (IndexError, ValueError):
        return False
    return not entries


def _fields(data: bytes) -> Iterator[tuple[int, int, bytes | None]]:
    """(field number, wire type, bytes of a length-delimited field's payload or None) of each field
    of a serialized message (IndexError or ValueError when malformed)."""
    pos, n = 0, len(data)
    while pos < n:
        key, pos = _varint_at(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            pos = _varint_at(data, pos)[1]
        elif wire_type in (1, 5):
            pos += 8 if wire_type == 1 else 4
        elif wire_type == 2:
            size, pos = _varint_at(data, pos)
            if pos + size > n:
                raise IndexError("field runs past the end")
            yield number, wire_type, data[pos : pos + size]
            pos += size
            continue
        else:
            raise ValueError(f"wire type {wire_type}")
        if pos > n:
            raise IndexError("field runs past the end")
        yield number, wire_type, None


def _bad_utf8(wire: bytes) -> str | None:
    """The field of a serialized point whose ``string`` bytes are not UTF-8 ("metric", "labels"
    for a name, "labels.<name>" for a value), or None."""
    try:
        for number, wire_type, payload in _fields(wire):
            if payload is None or wire_type != 2:
                continue
            if number == 1:
                payload.decode("utf-8")
            elif number == 2:
                name = ""
                for entry_number, _, text in _fields(payload):
                    if text is None:
                        continue
                    if entry_number == 1:
                        try:
                            name = text.decode("utf-8")
                        except UnicodeDecodeError:
                            return "labels"
                    elif entry_number == 2:
                        try:
                            text.decode("utf-8")
                        except UnicodeDecodeError:
                            return f"labels.{name[:64]}"
    except UnicodeDecodeError:
        return "metric"
    except (IndexError, ValueError):
        return None
    return None


def _undecodable(index: int, wire: bytes) -> InvalidArgument:
    """The refusal of a request whose point ``index`` (bytes ``wire``) upb cannot parse."""
    field = _bad_utf8(wire)
    if field is not None:
        return InvalidArgument(f"points[{index}].{field}", "not valid UTF-8")
    return InvalidArgument("points", f"point {index} is not a valid Point")


def _undecodable_request(request: bytes, base_index: int) -> InvalidArgument:
    """The refusal of a request upb cannot parse: its first unparsable point when there is one."""
    index = base_index
    try:
        for number, _, payload in _fields(request):
            if number == 1 and payload is not None:
                try:
                    common_pb2.Point.FromString(payload)
                except DecodeError:
                    return _undecodable(index, payload)
                index += 1
    except (IndexError, ValueError):
        pass
    return InvalidArgument("points", "not a valid WriteRequest")


def _varint_at(data: bytes, pos: int) -> tuple[int, int]:
    """The varint starting at ``data[pos]`` and the offset after it (IndexError when truncated,
    ValueError when longer than 10 bytes)."""
    value = 0
    for shift in range(0, 70, 7):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
    raise ValueError("varint longer than 10 bytes")


def _tails(tails: list[bytes]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """For the 19-byte tails of walked points, at once: whether each is exactly a timestamp field
    with a 9-byte varint (the value field's tag was checked by the walk), that timestamp, and
    whether the value is NaN or infinite."""
    fields = np.frombuffer(b"".join(tails), _TAIL_FIELDS)
    ts_varint = fields["varint"]
    continued = np.logical_and.reduce(ts_varint[:, :8] >= 0x80, axis=1)  # ufunc reductions: no Python wrapper
    shaped = (fields["ts_tag"] == _TS_TAG) & continued & (ts_varint[:, 8] < 0x80)
    ts = np.add.reduce((ts_varint & 0x7F).astype(np.uint64) << _SHIFTS, axis=1).view(np.int64)
    return shaped, ts, ~np.isfinite(fields["value"])
