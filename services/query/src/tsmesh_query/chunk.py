"""The cached unit: one chunk's step buckets per group, and its compact binary encoding.

Layout: ``u32 header length | header JSON | per group: buckets i64[n], values f64[n], counts i64[n]``.
Arrays round-trip floats bit-exactly (JSON would not for NaN), and encoding costs no per-point
Python work.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from array import array
from dataclasses import dataclass, field

import numpy as np
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
    inner_edges = np.array([hi for _, hi in bounds[:-1]], dtype=np.int64)
    for key, series in groups.items():
        starts = np.frombuffer(series.buckets, dtype=np.int64)
        cuts = [0, *np.searchsorted(starts, inner_edges).tolist(), len(starts)]
        for index, (a, b) in enumerate(itertools.pairwise(cuts)):
            if b > a:
                chunks[index].groups[key] = GroupSeries(series.buckets[a:b], series.values[a:b], series.counts[a:b])
    return chunks


def trim(data: ChunkData, lo: int, hi: int) -> ChunkData:
    """The buckets of ``data`` starting in ``[lo, hi)`` (a chunk overhanging the query's ends)."""
    groups: dict[str, GroupSeries] = {}
    for key, series in data.groups.items():
        a = bisect.bisect_left(series.buckets, lo)
        b = bisect.bisect_left(series.buckets, hi, a)
        if a == 0 and b == len(series.buckets):
            groups[key] = series
        elif b > a:
            groups[key] = GroupSeries(series.buckets[a:b], series.values[a:b], series.counts[a:b])
    return ChunkData(data.resolution, groups)


def from_arrays(buckets: bytes, values: bytes, counts: bytes) -> GroupSeries:
    """A group's series from the SQL's packed big-endian arrays, sorted by bucket start (they come
    sorted from a sorted subquery; checked, and sorted here if a plan ever fed them otherwise)."""
    starts = np.frombuffer(buckets, dtype=">i8").astype(np.int64)
    vals = np.frombuffer(values, dtype=">f8").astype(np.float64)
    ns = np.frombuffer(counts, dtype=">i8").astype(np.int64)
    if len(starts) > 1 and not bool((starts[1:] > starts[:-1]).all()):
        order = np.argsort(starts, kind="stable")
        starts, vals, ns = starts[order], vals[order], ns[order]
    series = GroupSeries()
    series.buckets.frombytes(starts.tobytes())
    series.values.frombytes(vals.tobytes())
    series.counts.frombytes(ns.tobytes())
    return series
