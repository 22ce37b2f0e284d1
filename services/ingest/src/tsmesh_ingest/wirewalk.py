"""The wire walk of a ``WriteRequest``: its points read from the request's bytes, no message parsed.

Each point's bytes are both what goes to Kafka (with their length prefix they are a
``PointBatch.points`` entry minus its tag) and, minus the timestamp and value fields at their tail,
the cache key of the point's identity (:mod:`tsmesh_ingest.validation` says why a hit is trusted).
The walk is the hot loop of ingest: per point, three slices and one dict lookup. It is specialised
(the points' key and a one- or two-byte length read inline), but every key and length it compares
comes from :mod:`tsmesh_common.protowire` and the generated descriptors, bound to locals before the
loop: as cheap as literals (docs/benchmarks.md, "Hand-written wire code").
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.protowire import LEN, fields, read_varint, tag, tag_of

_POINT = common_pb2.Point.DESCRIPTOR
POINTS_TAG = tag_of(ingest_pb2.WriteRequest.DESCRIPTOR, "points")
METRIC_TAG = tag_of(_POINT, "metric")
LABELS_TAG = tag_of(_POINT, "labels")
TS_TAG = tag_of(_POINT, "timestamp_ns")
VALUE_TAG = tag_of(_POINT, "value")
_ENTRY = common_pb2.Point.LabelsEntry.DESCRIPTOR
_ENTRY_KEY_TAG = tag_of(_ENTRY, "key")
_ENTRY_VALUE_TAG = tag_of(_ENTRY, "value")
# Timestamps at or above 2**56 ns (1972) are 9-byte varints: a point's tail is then exactly the
# 10-byte timestamp field, plus the 9-byte value field when present (its key nine bytes from the
# end; absent, that byte is inside the varint and has its continuation bit set).
_TS_VARINT_BYTES = 9
TS_FIELD_BYTES = 1 + _TS_VARINT_BYTES
VALUE_FIELD_BYTES = 1 + 8
TAIL = TS_FIELD_BYTES + VALUE_FIELD_BYTES
# Put before the request's bytes so that reading a point's last TAIL bytes never starts before them.
PAD = bytes(TAIL)
_ZERO_VALUE = bytes((VALUE_TAG,)) + bytes(8)
# A point's tail: the timestamp field with a 9-byte varint, then the value field (little-endian f64).
_TAIL_FIELDS = np.dtype([("ts_tag", "u1"), ("varint", "u1", (9,)), ("value_tag", "u1"), ("value", "<f8")])
_SHIFTS = np.arange(_TS_VARINT_BYTES, dtype=np.uint64) * np.uint64(7)


@dataclass
class Walked:
    """The points of a request whose identity prefix was a cached key (in order): their ids,
    framed bytes and 19-byte tails (timestamp and value fields); (index, bytes) of the others."""

    series_ids: list[int]
    framed: list[bytes]
    tails: list[bytes]
    misses: list[tuple[int, bytes]]


def walk(data: bytes, by_encoding: dict[bytes, int], limit: int) -> Walked | None:
    """One pass over :data:`PAD` + WriteRequest bytes: the id, framed bytes and tail of each point
    whose bytes before its timestamp and value fields are a cached key, and the others' index and
    bytes. None when the bytes are not a sequence of at most ``limit`` points (a field other than
    ``points``, more points, or malformed: a point running past the end leaves ``pos`` beyond it)."""
    get = by_encoding.get
    ids: list[int] = []
    framed: list[bytes] = []
    tails: list[bytes] = []
    misses: list[tuple[int, bytes]] = []
    add_id, add_framed, add_tail = ids.append, framed.append, tails.append
    points_tag, value_tag, tail, ts_field, value_field = POINTS_TAG, VALUE_TAG, TAIL, TS_FIELD_BYTES, VALUE_FIELD_BYTES
    zero_value = _ZERO_VALUE
    n = len(data)
    pos = tail
    try:
        for _ in range(limit):
            if pos >= n:
                break
            if data[pos] != points_tag:
                return None
            size = data[pos + 1]  # the length varint, its one- and two-byte forms inline
            if size < 0x80:
                start = pos + 2
            elif data[pos + 2] < 0x80:
                size = (size & 0x7F) | (data[pos + 2] << 7)
                start = pos + 3
            else:
                size, start = read_varint(data, pos + 1)
            end = start + size
            if data[end - value_field] == value_tag:
                sid = get(data[start : end - tail])
                if sid is not None:
                    add_id(sid)
                    add_framed(data[pos + 1 : end])
                    add_tail(data[end - tail : end])
                    pos = end
                    continue
            else:  # a value of 0.0 is not written: the tail is the timestamp field alone
                sid = get(data[start : end - ts_field])
                if sid is not None:
                    add_id(sid)
                    add_framed(data[pos + 1 : end])
                    add_tail(data[end - ts_field : end] + zero_value)
                    pos = end
                    continue
            misses.append((len(ids) + len(misses), data[start:end]))
            pos = end
    except (IndexError, ValueError):  # truncated, or a length varint longer than 10 bytes
        return None
    if pos != n:
        return None
    return Walked(ids, framed, tails, misses)


def unframe(framed: bytes) -> bytes:
    """A point's bytes from its framed form (length varint + bytes)."""
    return framed[read_varint(framed, 0)[1] :]


def identity_prefix(wire: bytes) -> bytes | None:
    """The bytes of a serialized point before its tail (the walk's lookup key) when the tail is
    exactly a timestamp field with a 9-byte varint plus, optionally, a value field; else None."""
    with_value = len(wire) >= TAIL and wire[-VALUE_FIELD_BYTES] == VALUE_TAG
    cut = len(wire) - (TAIL if with_value else TS_FIELD_BYTES)
    if cut < 0 or wire[cut] != TS_TAG or wire[cut + _TS_VARINT_BYTES] >= 0x80:
        return None
    if any(byte < 0x80 for byte in wire[cut + 1 : cut + _TS_VARINT_BYTES]):
        return None
    return wire[:cut]


def encodes_identity(key: bytes, metric: str, labels: tuple[tuple[str, str], ...]) -> bool:
    """Whether ``key`` is the canonical encoding of (metric, labels) up to the order of the label
    entries (a client's map order is its own): the metric field, then each entry exactly once."""
    head = common_pb2.Point(metric=metric).SerializeToString()
    entries = {common_pb2.Point(labels={name: value}).SerializeToString() for name, value in labels}
    if not key.startswith(head) or len(key) != len(head) + sum(map(len, entries)):
        return False
    pos = len(head)
    try:
        while pos < len(key):
            size, start = read_varint(key, pos + 1)
            entry = key[pos : start + size]
            if entry not in entries:
                return False
            entries.remove(entry)
            pos = start + size
    except (IndexError, ValueError):
        return False
    return not entries


def bad_utf8_field(wire: bytes) -> str | None:
    """The field of a serialized point whose ``string`` bytes are not UTF-8 ("metric", "labels"
    for a name, "labels.<name>" for a value), or None (also when the bytes are malformed)."""
    try:
        for field_tag, payload in _payloads(wire):
            if field_tag == METRIC_TAG:
                payload.decode("utf-8")
            elif field_tag == LABELS_TAG:
                name = ""
                for entry_tag, text in _payloads(payload):
                    if entry_tag == _ENTRY_KEY_TAG:
                        try:
                            name = text.decode("utf-8")
                        except UnicodeDecodeError:
                            return "labels"
                    elif entry_tag == _ENTRY_VALUE_TAG:
                        try:
                            text.decode("utf-8")
                        except UnicodeDecodeError:
                            return f"labels.{name[:64]}"
    except UnicodeDecodeError:
        return "metric"
    except (IndexError, ValueError):
        return None
    return None


def request_points(request: bytes) -> Iterator[bytes]:
    """The bytes of each ``points`` entry of a serialized WriteRequest, up to where it is malformed."""
    try:
        for field_tag, payload in _payloads(request):
            if field_tag == POINTS_TAG:
                yield payload
    except (IndexError, ValueError):
        return


def _payloads(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(key, payload) of each length-delimited field of a message, read as the walk goes (IndexError
    or ValueError where it is malformed)."""
    for number, _, value in fields(data):
        if isinstance(value, bytes):
            yield tag(number, LEN), value


def tails(walked: list[bytes]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """For the 19-byte tails of walked points, at once: whether each is exactly a timestamp field
    with a 9-byte varint (the value field's key was checked by the walk), that timestamp, and
    whether the value is NaN or infinite."""
    fields_ = np.frombuffer(b"".join(walked), _TAIL_FIELDS)
    ts_varint = fields_["varint"]
    continued = np.logical_and.reduce(ts_varint[:, :8] >= 0x80, axis=1)  # ufunc reductions: no Python wrapper
    shaped = (fields_["ts_tag"] == TS_TAG) & continued & (ts_varint[:, 8] < 0x80)
    ts = np.add.reduce((ts_varint & 0x7F).astype(np.uint64) << _SHIFTS, axis=1).view(np.int64)
    return shaped, ts, ~np.isfinite(fields_["value"])
