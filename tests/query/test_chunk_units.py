"""Pure chunk helpers: SQL array decoding, trimming overhanging chunks, the last chunk's end."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from test_query_range import request

from tsmesh_query.chunk import ChunkData, GroupSeries, from_arrays, trim
from tsmesh_query.config import QueryLimits
from tsmesh_query.plan import last_chunk_end, parse_range, split


def packed(fmt: str, values: list) -> bytes:
    return struct.pack(f">{len(values)}{fmt}", *values)


def test_from_arrays_decodes_big_endian_and_sorts_if_needed() -> None:
    series = from_arrays(packed("q", [300, 100, 200]), packed("d", [3.0, 1.0, float("-inf")]), packed("q", [3, 1, 2]))
    assert list(series.buckets) == [100, 200, 300]
    assert list(series.values) == [1.0, float("-inf"), 3.0]
    assert list(series.counts) == [1, 2, 3]
    assert list(from_arrays(b"", b"", b"").buckets) == []


def test_trim_keeps_buckets_starting_inside_the_range() -> None:
    data = ChunkData(
        2, {"a": from_arrays(packed("q", [0, 10, 20, 30]), packed("d", [1, 2, 3, 4]), packed("q", [1] * 4))}
    )
    data.groups["b"] = GroupSeries()
    data.groups["b"].buckets.append(40)
    data.groups["b"].values.append(9.0)
    data.groups["b"].counts.append(1)
    kept = trim(data, 10, 30)
    assert kept.resolution == 2 and set(kept.groups) == {"a"}
    assert list(kept.groups["a"].buckets) == [10, 20] and list(kept.groups["a"].values) == [2.0, 3.0]


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 10**6),
    length=st.integers(1, 10**5),
    step=st.sampled_from([1, 7, 60, 600]),
    width_steps=st.sampled_from([1, 2, 8, 32]),
)
def test_last_chunk_end_matches_split_and_chunks_cover_the_query(start, length, step, width_steps) -> None:
    query = parse_range(request("m", start, start + length, step, "avg", None, "none"), QueryLimits(max_buckets=10**6))
    width = step * width_steps
    chunks = split(query, width)
    assert last_chunk_end(query, width) == chunks[-1].hi
    assert chunks[0].lo <= query.start and chunks[-1].hi >= query.end
    assert all(a.hi == b.lo for a, b in itertools.pairwise(chunks))
    if chunks[0].lo < query.start or chunks[-1].hi > query.end:  # overhang only when both ends are aligned
        assert query.start % step == 0 and query.end % step == 0
