"""Assemble chunk results into a QueryRange response and apply the fill mode.

- ``none``: only non-empty buckets;
- ``null``: every bucket of the grid, empty ones without a value;
- ``previous``: empty buckets repeat the last value seen in the range (none before the first);
- ``linear``: empty buckets between two values are interpolated on bucket start; leading and
  trailing empty buckets have no value.
Filled buckets have ``count = 0``.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import orjson
from tsmesh.v1 import query_pb2

from tsmesh_query import wire
from tsmesh_query.chunk import ChunkData, GroupSeries
from tsmesh_query.plan import RangeQuery


def merge_chunks(chunks: Iterable[ChunkData]) -> dict[str, GroupSeries]:
    """Concatenate chunk results per group (chunks are in time order)."""
    merged: dict[str, GroupSeries] = {}
    for chunk in chunks:
        for key, series in chunk.groups.items():
            target = merged.get(key)
            if target is None:
                merged[key] = GroupSeries(series.buckets[:], series.values[:], series.counts[:])
            else:
                target.buckets.extend(series.buckets)
                target.values.extend(series.values)
                target.counts.extend(series.counts)
    return merged


Columns = tuple[wire.I64, wire.F64, wire.Bools, wire.I64]


def _columns(query: RangeQuery, series: GroupSeries) -> Columns:
    """Bucket starts, values, value presence and counts of one group after the fill mode."""
    starts = np.frombuffer(series.buckets, dtype=np.int64)
    values = np.frombuffer(series.values, dtype=np.float64)
    counts = np.frombuffer(series.counts, dtype=np.int64)
    if query.fill == "none":
        return starts, values, np.ones(len(starts), dtype=np.bool_), counts
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
            dense_values[filled] = v0 + (v1 - v0) * (at - lo).astype(np.float64) / (hi - lo).astype(np.float64)
        has |= filled
    return first + index.astype(np.int64) * step, dense_values, has, dense_counts


def build_response(query: RangeQuery, chunks: list[ChunkData], resolution: int) -> bytes:
    """The wire bytes of the QueryRangeResponse for ``query`` from its chunks (series ordered by
    their labels).

    Every bucket of every series is encoded in one numpy pass (``wire``); the bytes go to gRPC as
    they are (no message object is built, parsed or serialized again).
    """
    merged = merge_chunks(chunks)
    keys = sorted(merged)
    if not keys:
        return query_pb2.QueryRangeResponse(resolution=resolution).SerializeToString()  # type: ignore[arg-type]
    columns = [_columns(query, merged[key]) for key in keys]
    blob, ends = wire.encode_buckets(*(np.concatenate([c[i] for c in columns]) for i in range(4)))
    bodies: list[bytes] = []
    offset, last = 0, 0
    for c in columns:
        offset += len(c[0])
        stop = int(ends[offset - 1]) if offset else 0
        bodies.append(blob[last:stop])
        last = stop
    metric = query.selector.metric
    heads = [wire.series_head(metric, orjson.loads(key)) for key in keys]
    return wire.encode_response(heads, bodies, resolution)
