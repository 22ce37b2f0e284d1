"""Assemble chunk results into a QueryRange response and apply the fill mode.

- ``none``: only non-empty buckets;
- ``null``: every bucket of the grid, empty ones without a value;
- ``previous``: empty buckets repeat the last value seen in the range (none before the first);
- ``linear``: empty buckets between two values are interpolated on bucket start; leading and
  trailing empty buckets have no value.
Filled buckets have ``count = 0``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import orjson
from tsmesh.v1 import query_pb2

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


def _dense(query: RangeQuery, series: GroupSeries) -> list[tuple[int, float | None, int]]:
    step, first = query.step, query.first_bucket
    slots: list[tuple[int, float | None, int]] = [(first + i * step, None, 0) for i in range(query.bucket_count)]
    for b, v, c in zip(series.buckets, series.values, series.counts, strict=True):
        slots[(b - first) // step] = (b, v, c)
    if query.fill == "previous":
        last: float | None = None
        for i, slot in enumerate(slots):
            if slot[1] is None:
                slots[i] = (slot[0], last, 0)
            else:
                last = slot[1]
    elif query.fill == "linear":
        known = [i for i, (_, v, _) in enumerate(slots) if v is not None]
        for left, right in itertools.pairwise(known):
            v0, v1 = slots[left][1], slots[right][1]
            assert v0 is not None and v1 is not None
            for i in range(left + 1, right):
                slots[i] = (slots[i][0], v0 + (v1 - v0) * (i - left) / (right - left), 0)
    return slots


def build_response(query: RangeQuery, chunks: list[ChunkData], resolution: int) -> query_pb2.QueryRangeResponse:
    """The response for ``query`` from its chunks, series ordered by their labels."""
    response = query_pb2.QueryRangeResponse(resolution=resolution)  # type: ignore[arg-type]
    merged = merge_chunks(chunks)
    metric = query.selector.metric
    for key in sorted(merged):
        series = merged[key]
        result = response.series.add(metric=metric, labels=orjson.loads(key))
        buckets = result.buckets
        if query.fill == "none":
            for b, v, c in zip(series.buckets, series.values, series.counts, strict=True):
                buckets.add(start_ns=b, value=v, count=c)
            continue
        for b, maybe, c in _dense(query, series):
            if maybe is None:
                buckets.add(start_ns=b, count=c)
            else:
                buckets.add(start_ns=b, value=maybe, count=c)
    return response
