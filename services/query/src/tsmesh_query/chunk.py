"""The cached unit: one chunk's step buckets per group, and its compact binary encoding.

Layout: ``u32 header length | header JSON | per group: buckets i64[n], values f64[n], counts i64[n]``.
Arrays round-trip floats bit-exactly (JSON would not for NaN), and encoding costs no per-point
Python work.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from dataclasses import dataclass, field

import orjson

_LEN = struct.Struct("<I")


@dataclass(slots=True)
class GroupSeries:
    """Parallel arrays of one group's non-empty step buckets, sorted by bucket start."""

    buckets: array[int] = field(default_factory=lambda: array("q"))
    values: array[float] = field(default_factory=lambda: array("d"))
    counts: array[int] = field(default_factory=lambda: array("q"))


@dataclass(slots=True)
class ChunkData:
    """Results of one chunk: group key (canonical JSON of the output labels) to its buckets."""

    resolution: int
    groups: dict[str, GroupSeries]

    def encode(self) -> bytes:
        keys = list(self.groups)
        header = orjson.dumps({"r": self.resolution, "g": [[k, len(self.groups[k].buckets)] for k in keys]})
        parts = [_LEN.pack(len(header)), header]
        for key in keys:
            g = self.groups[key]
            parts += (g.buckets.tobytes(), g.values.tobytes(), g.counts.tobytes())
        return b"".join(parts)

    @classmethod
    def decode(cls, blob: bytes) -> ChunkData:
        (size,) = _LEN.unpack_from(blob, 0)
        header = orjson.loads(blob[4 : 4 + size])
        offset = 4 + size
        groups: dict[str, GroupSeries] = {}
        view = memoryview(blob)
        for key, n in header["g"]:
            series = GroupSeries()
            series.buckets.frombytes(view[offset : offset + 8 * n])
            series.values.frombytes(view[offset + 8 * n : offset + 16 * n])
            series.counts.frombytes(view[offset + 16 * n : offset + 24 * n])
            offset += 24 * n
            groups[key] = series
        return cls(int(header["r"]), groups)


def split_range(groups: dict[str, GroupSeries], bounds: list[tuple[int, int]], resolution: int) -> list[ChunkData]:
    """Cut one computed range into the chunks ``bounds`` (contiguous, ascending)."""
    chunks = [ChunkData(resolution, {}) for _ in bounds]
    lows = [lo for lo, _ in bounds]
    for key, series in groups.items():
        start = 0
        n = len(series.buckets)
        while start < n:
            index = max(0, bisect.bisect_right(lows, series.buckets[start]) - 1)
            hi = bounds[index][1]
            stop = bisect.bisect_left(series.buckets, hi, start)
            chunks[index].groups[key] = GroupSeries(
                series.buckets[start:stop], series.values[start:stop], series.counts[start:stop]
            )
            start = stop
    return chunks
