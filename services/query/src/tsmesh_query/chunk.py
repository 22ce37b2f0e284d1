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
from typing import Any

import numpy as np
import numpy.typing as npt
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


def group_arrays(groups: bytes, buckets: bytes, values: bytes, counts: bytes) -> list[tuple[int, GroupSeries]]:
    """Each group's series from the SQL's packed big-endian parallel arrays (rows in any order),
    sorted by bucket start. A sort runs only when some group's rows are not one ascending run, as
    they are from any scan of a rollup's (series, bucket) key or its heap in refresh order."""
    keys = np.frombuffer(groups, dtype=">i8").astype(np.int64)
    starts = np.frombuffer(buckets, dtype=">i8").astype(np.int64)
    vals = np.frombuffer(values, dtype=">f8").astype(np.float64)
    ns = np.frombuffer(counts, dtype=">i8").astype(np.int64)
    if len(keys) == 0:
        return []
    change = keys[1:] != keys[:-1]
    firsts = np.flatnonzero(change) + 1
    run_keys = keys[np.concatenate(([0], firsts))]
    if len(np.unique(run_keys)) < len(run_keys) or not bool((change | (starts[1:] > starts[:-1])).all()):
        order = np.lexsort((starts, keys))
        keys, starts, vals, ns = keys[order], starts[order], vals[order], ns[order]
        firsts = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    cuts = [0, *firsts.tolist(), len(keys)]
    views = [column.data.cast("B") for column in (starts, vals, ns)]  # one copy per group, below
    return [
        (
            int(keys[a]),
            GroupSeries(
                _array("q", views[0][8 * a : 8 * b]),
                _array("d", views[1][8 * a : 8 * b]),
                _array("q", views[2][8 * a : 8 * b]),
            ),
        )
        for a, b in itertools.pairwise(cuts)
    ]


def _array(code: str, data: memoryview) -> array[Any]:
    out = array(code)
    out.frombytes(data)
    return out


def reduce_partials(
    series: bytes,
    buckets: bytes,
    partials: bytes,
    counts: bytes,
    group_of: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
    groups: int,
    span: tuple[int, int, int],
    aggregation: str,
) -> list[tuple[int, GroupSeries]]:
    """Rollup rows (series id, rollup bucket, partial, count; packed big-endian, any order) combined
    into each group's step buckets: ``avg``, ``sum``, ``count``, ``min`` or ``max``.

    ``group_of`` is (sorted series ids, their group index); ``span`` is (lo, hi, step) of the run.
    Bucket starts are ``b - b % step`` (truncating, as PostgreSQL's ``%``); NaN ranks as PostgreSQL
    does: ``min`` ignores it unless every value is NaN, ``max`` returns it. Returns (group index,
    its series) for groups with at least one bucket.
    """
    ids = np.frombuffer(series, dtype=">i8").astype(np.int64)
    if len(ids) == 0:
        return []
    starts = np.frombuffer(buckets, dtype=">i8").astype(np.int64)
    vals = np.frombuffer(partials, dtype=">f8").astype(np.float64)
    ns = np.frombuffer(counts, dtype=">i8").astype(np.float64)
    lo, hi, step = span
    base = lo - lo % step
    width = (hi - base) // step + 1
    sorted_ids, group_index = group_of
    key = group_index[np.searchsorted(sorted_ids, ids)] * width + (starts - np.fmod(starts, step) - base) // step
    size = groups * width
    total = np.bincount(key, weights=ns, minlength=size).astype(np.float64, copy=False)  # float when weighted
    present = np.bincount(key, minlength=size) > 0
    values: npt.NDArray[np.float64]
    if aggregation == "count":
        values = total
    elif aggregation in ("sum", "avg"):
        values = np.bincount(key, weights=vals, minlength=size).astype(np.float64, copy=False)
        if aggregation == "avg":
            with np.errstate(invalid="ignore", divide="ignore"):
                values = values / np.where(present, total, 1.0)
    elif aggregation == "min":
        values = np.full(size, np.nan)
        with np.errstate(invalid="ignore"):
            np.fmin.at(values, key, vals)
    else:
        values = np.full(size, -np.inf)
        with np.errstate(invalid="ignore"):  # NaN propagates, as PostgreSQL's max returns it
            np.maximum.at(values, key, vals)
    out: list[tuple[int, GroupSeries]] = []
    for group in range(groups):
        cells = np.flatnonzero(present[group * width : (group + 1) * width])
        if len(cells) == 0:
            continue
        at = cells + group * width
        out.append(
            (
                group,
                GroupSeries(
                    array("q", (base + cells.astype(np.int64) * step).tobytes()),
                    array("d", values[at].tobytes()),
                    array("q", total[at].astype(np.int64).tobytes()),
                ),
            )
        )
    return out
