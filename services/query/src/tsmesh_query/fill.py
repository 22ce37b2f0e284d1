"""Assemble chunk results into a QueryRange response and apply the fill mode.

- ``none``: only non-empty buckets;
- ``null``: every bucket of the grid, empty ones without a value;
- ``previous``: empty buckets repeat the last value seen in the range (none before the first);
- ``linear``: empty buckets between two values are interpolated on bucket start; leading and
  trailing empty buckets have no value. IEEE arithmetic: an infinite or NaN end gives +-inf or NaN;
  finite ends too far apart to subtract are interpolated as a weighted mean instead.
Filled buckets have ``count = 0``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from tsmesh.v1 import query_pb2

from tsmesh_query import wire
from tsmesh_query.chunk import ChunkData, GroupSeries
from tsmesh_query.plan import RangeQuery


def group_pieces(chunks: Iterable[ChunkData]) -> dict[str, list[GroupSeries]]:
    """Each group's series from every chunk, in chunk (time) order; nothing is copied."""
    pieces: dict[str, list[GroupSeries]] = {}
    for chunk in chunks:
        for key, series in chunk.groups.items():
            pieces.setdefault(key, []).append(series)
    return pieces


def _joined(series: list[GroupSeries], column: str, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """One column of consecutive series as one array (a single copy)."""
    return np.frombuffer(b"".join(getattr(s, column) for s in series), dtype=dtype)


Columns = tuple[wire.I64, wire.F64, wire.Bools, wire.I64]


def _columns(query: RangeQuery, series: list[GroupSeries]) -> Columns:
    """Bucket starts, values, value presence and counts of one group (its pieces in time order)
    after a fill mode other than ``none``."""
    starts = _joined(series, "buckets", np.int64)
    values = _joined(series, "values", np.float64)
    counts = _joined(series, "counts", np.int64)
    n, step, first = query.bucket_count, query.step, query.first_bucket
    index = np.arange(n)
    slot = (starts - first) // step
    dense_values = np.zeros(n, dtype=np.float64)
    dense_counts = np.zeros(n, dtype=np.int64)
    has = np.zeros(n, dtype=np.bool_)
    dense_values[slot] = values
    dense_counts[slot] = counts
    has[slot] = True
    if query.fill in ("previous", "linear"):
        left = np.maximum.accumulate(np.where(has, index, -1))
        if query.fill == "previous":
            filled = ~has & (left >= 0)
            dense_values[filled] = dense_values[left[filled]]
        else:
            right = np.minimum.accumulate(np.where(has, index, n)[::-1])[::-1]
            filled = ~has & (left >= 0) & (right < n)
            lo, hi, at = left[filled], right[filled], index[filled]
            v0, v1 = dense_values[lo], dense_values[hi]
            with np.errstate(over="ignore", invalid="ignore"):  # +-inf and NaN ends give +-inf or NaN
                line = v0 + (v1 - v0) * (at - lo).astype(np.float64) / (hi - lo).astype(np.float64)
                # finite ends whose difference overflows (1e308 and -1e308): the same line as a weighted mean
                wide = ~np.isfinite(line) & np.isfinite(v0) & np.isfinite(v1)
                if wide.any():
                    t = (at[wide] - lo[wide]).astype(np.float64) / (hi[wide] - lo[wide]).astype(np.float64)
                    line[wide] = v0[wide] * (1.0 - t) + v1[wide] * t
            dense_values[filled] = line
        has |= filled
    return first + index.astype(np.int64) * step, dense_values, has, dense_counts


def build_response(query: RangeQuery, chunks: list[ChunkData], resolution: int) -> bytes:
    """The wire bytes of the QueryRangeResponse for ``query`` from its chunks (series ordered by
    their labels).

    Every bucket of every series is encoded in one numpy pass (``wire``); the bytes go to gRPC as
    they are (no message object is built, parsed or serialized again).
    """
    pieces = group_pieces(chunks)
    keys = sorted(pieces)
    if not keys:
        return query_pb2.QueryRangeResponse(resolution=resolution).SerializeToString()  # type: ignore[arg-type]
    sizes: list[int]
    if query.fill == "none":  # the buckets as they are: every column of every group copied once
        ordered = [series for key in keys for series in pieces[key]]
        sizes = [sum(len(series.buckets) for series in pieces[key]) for key in keys]
        starts = _joined(ordered, "buckets", np.int64)
        flat = (starts, _joined(ordered, "values", np.float64), np.ones(len(starts), dtype=np.bool_))
        blob, ends = wire.encode_buckets(*flat, _joined(ordered, "counts", np.int64))
    else:
        columns = [_columns(query, pieces[key]) for key in keys]
        sizes = [len(c[0]) for c in columns]
        blob, ends = wire.encode_buckets(*(np.concatenate([c[i] for c in columns]) for i in range(4)))
    bodies: list[memoryview] = []  # slices of ``blob``: joined once by ``encode_response``, not copied
    offset, last = 0, 0
    for size in sizes:
        offset += size
        stop = int(ends[offset - 1]) if offset else 0
        bodies.append(blob[last:stop])
        last = stop
    metric = query.selector.metric
    heads = [wire.series_head(metric, orjson.loads(key)) for key in keys]
    return wire.encode_response(heads, bodies, resolution)
