"""Points written straight into ``tsmesh.v1.WriteRequest`` wire bytes, in requests of bounded size.

The push protocols (remote_write, OTLP, line protocol) carry many samples per series: a series'
identity (metric and labels) is encoded once as the bytes of a ``Point`` before its timestamp and
value fields, and each sample appends those two fields. No message object is built per point, and
the bytes are what ingest's wire-path validation reads (ADR 0206): a label map in the order given,
then the timestamp and the value field (written even when 0.0, which is valid protobuf).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.protowire import varint

_DOUBLE = struct.Struct("<d")
_PACK = _DOUBLE.pack
_UINT64 = 1 << 64
_NINE_BYTES = 1 << 56
_INT64_END = 1 << 63
MAX_MESSAGES = 10
MAX_TIMESTAMPS = 4096
# The tag of WriteRequest.points and a one-byte length, by length.
_SHORT = [bytes((0x0A, n)) for n in range(128)]


def _field(tag: int, data: bytes) -> bytes:
    return bytes((tag,)) + varint(len(data)) + data


def identity(metric: str, labels: Iterable[tuple[str, str]]) -> bytes:
    """The bytes of ``Point(metric, labels)`` (the fields before the timestamp), labels in the given order."""
    parts = [_field(0x0A, metric.encode("utf-8", "surrogatepass"))]
    for name, value in labels:
        entry = _field(0x0A, name.encode("utf-8", "surrogatepass")) + _field(
            0x12, value.encode("utf-8", "surrogatepass")
        )
        parts.append(_field(0x12, entry))
    return b"".join(parts)


def sample(timestamp_ns: int, value: float) -> bytes:
    """The timestamp and value fields of a point (int64 as protobuf writes it: negative as 10 bytes)."""
    ts = timestamp_ns
    if _NINE_BYTES <= ts < _INT64_END:  # every timestamp since 1972: a 9-byte varint, unrolled
        head = bytes(
            (
                0x18,
                ts & 0x7F | 0x80,
                ts >> 7 & 0x7F | 0x80,
                ts >> 14 & 0x7F | 0x80,
                ts >> 21 & 0x7F | 0x80,
                ts >> 28 & 0x7F | 0x80,
                ts >> 35 & 0x7F | 0x80,
                ts >> 42 & 0x7F | 0x80,
                ts >> 49 & 0x7F | 0x80,
                ts >> 56,
                0x21,
            )
        )
        return head + _DOUBLE.pack(value)
    if not -_INT64_END <= ts < _INT64_END:
        raise InvalidArgument("timestamp", f"{ts} ns is outside the int64 range")
    return b"\x18" + varint(ts % _UINT64) + b"\x21" + _DOUBLE.pack(value)


class IdentityCache:
    """Identity bytes by a caller's key (its labels as received), kept across requests of one
    process: agents send the same series every interval. At most ``max_entries``; full, it starts
    again empty. Threads may share one: each get or put is one dict operation (at worst a
    concurrent clear loses entries, recomputed later)."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._entries: dict[object, bytes] = {}

    def get(self, key: object) -> bytes | None:
        return self._entries.get(key)

    def put(self, key: object, value: bytes) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = value


class TooManyPoints(InvalidArgument):
    """A push request holds more points than one request may (the HTTP routes answer 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__("points", f"at most {limit} points per request")
        self.limit = limit


class RequestWriter:
    """Collects points into serialized ``WriteRequest`` messages of at most ``max_points`` points
    each, and at most ``max_total`` in all (:class:`TooManyPoints` beyond: memory stays bounded).

    A push's points share few timestamps (one per scrape or export), so each timestamp's encoded
    field is kept (at most :data:`MAX_TIMESTAMPS`), and a point is appended as its four pieces,
    joined once per request."""

    def __init__(self, max_points: int, max_total: int) -> None:
        self._max_points = max_points
        self._max_total = max_total
        self._done: list[bytes] = []
        self._current: list[bytes] = []
        self._left = max_points
        self._timestamps: dict[int, bytes] = {}
        self.points = 0

    def add(self, identity_bytes: bytes, timestamp_ns: int, value: float) -> None:
        """Append one point of the series ``identity_bytes`` (from :func:`identity`)."""
        if self.points >= self._max_total:
            raise TooManyPoints(self._max_total)
        head = self._timestamps.get(timestamp_ns)
        if head is None:
            head = self._timestamp(timestamp_ns)
        size = len(identity_bytes) + len(head) + 8
        self._current += (_SHORT[size] if size < 128 else b"\x0a" + varint(size), identity_bytes, head, _PACK(value))
        self.points += 1
        self._left -= 1
        if not self._left:
            self._done.append(b"".join(self._current))
            self._current = []
            self._left = self._max_points

    def _timestamp(self, timestamp_ns: int) -> bytes:
        head = sample(timestamp_ns, 0.0)[:-8]
        if len(self._timestamps) >= MAX_TIMESTAMPS:
            self._timestamps.clear()
        self._timestamps[timestamp_ns] = head
        return head

    def requests(self) -> list[bytes]:
        """The serialized requests, in order (none when no point was added)."""
        if self._current:
            self._done.append(b"".join(self._current))
            self._current = []
            self._left = self._max_points
        return self._done


@dataclass
class Outcome:
    """What a translation into points refused (``rejected`` samples, the first few reasons) and how
    many stale markers it dropped (ADR 0220)."""

    rejected: int = 0
    messages: list[str] = field(default_factory=list)
    stale: int = 0

    def refuse(self, count: int, message: str) -> None:
        self.rejected += count
        if len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)
