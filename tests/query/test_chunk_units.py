"""Pure chunk helpers: SQL array decoding, trimming overhanging chunks, the last chunk's end."""

from __future__ import annotations

import itertools
import struct

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from test_range import request

from tsmesh_query.chunk import ChunkData, GroupSeries, group_arrays, reduce_partials, trim
from tsmesh_query.config import QueryLimits
from tsmesh_query.plan import last_chunk_end, parse_range, split


def packed(fmt: str, values: list) -> bytes:
    return struct.pack(f">{len(values)}{fmt}", *values)


def test_group_arrays_decodes_big_endian_groups_and_sorts_if_needed() -> None:
    rows = [(7, 300, 3.0, 3), (2, 50, 0.5, 5), (7, 100, 1.0, 1), (7, 200, float("-inf"), 2), (2, 10, -0.0, 1)]
    groups = group_arrays(*(packed(fmt, [r[i] for r in rows]) for i, fmt in enumerate("qqdq")))
    assert sorted(key for key, _ in groups) == [2, 7]
    two, seven = dict(groups)[2], dict(groups)[7]
    assert list(seven.buckets) == [100, 200, 300]
    assert list(seven.values) == [1.0, float("-inf"), 3.0]
    assert list(seven.counts) == [1, 2, 3]
    assert list(two.buckets) == [10, 50] and list(two.counts) == [1, 5]
    runs = group_arrays(packed("q", [3, 3, 1]), packed("q", [5, 6, 1]), packed("d", [1, 2, 3]), packed("q", [1] * 3))
    assert [(key, list(s.buckets)) for key, s in runs] == [(3, [5, 6]), (1, [1])]  # one run per group: kept
    split = group_arrays(packed("q", [3, 1, 3]), packed("q", [6, 1, 5]), packed("d", [1, 2, 3]), packed("q", [1] * 3))
    assert sorted((key, list(s.buckets)) for key, s in split) == [(1, [1]), (3, [5, 6])]
    already_sorted = group_arrays(
        packed("q", [1, 1, 3]), packed("q", [5, 6, 1]), packed("d", [1, 2, 3]), packed("q", [1] * 3)
    )
    assert [(key, list(s.buckets)) for key, s in already_sorted] == [(1, [5, 6]), (3, [1])]
    assert group_arrays(b"", b"", b"", b"") == []


def one_group(buckets: list[int], values: list[float], counts: list[int]) -> GroupSeries:
    ((_, series),) = group_arrays(
        packed("q", [0] * len(buckets)), packed("q", buckets), packed("d", values), packed("q", counts)
    )
    return series


def test_trim_keeps_buckets_starting_inside_the_range() -> None:
    data = ChunkData(2, {"a": one_group([0, 10, 20, 30], [1, 2, 3, 4], [1] * 4)})
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


def test_reduce_partials_combines_rollup_rows_per_group_and_step_bucket() -> None:
    nan = float("nan")
    # (series, rollup bucket, partial, count): series 10 and 30 form group 0, series 20 group 1
    rows = [(30, 70, 5.0, 2), (10, 0, 1.0, 1), (10, 60, nan, 1), (20, 130, -2.0, 4), (10, 120, 3.0, 3)]
    arrays = [packed(fmt, [r[i] for r in rows]) for i, fmt in zip((0, 1, 2, 3), "qqdq", strict=True)]
    group_of = (np.array([10, 20, 30], dtype=np.int64), np.array([0, 1, 0], dtype=np.int64))

    def reduced(aggregation: str) -> dict[int, list[tuple[int, float, int]]]:
        out = reduce_partials(*arrays, group_of, 2, (0, 180, 60), aggregation)
        return {g: list(zip(s.buckets, s.values, s.counts, strict=True)) for g, s in out}

    def same(a: dict[int, list[tuple[int, float, int]]], b: dict[int, list[tuple[int, float, int]]]) -> bool:
        return a.keys() == b.keys() and all(
            len(a[g]) == len(b[g])
            and all(
                x[0] == y[0] and x[2] == y[2] and (x[1] == y[1] or (x[1] != x[1] and y[1] != y[1]))
                for x, y in zip(a[g], b[g], strict=True)
            )
            for g in a
        )

    assert same(reduced("count"), {0: [(0, 1.0, 1), (60, 3.0, 3), (120, 3.0, 3)], 1: [(120, 4.0, 4)]})
    assert same(reduced("sum"), {0: [(0, 1.0, 1), (60, nan, 3), (120, 3.0, 3)], 1: [(120, -2.0, 4)]})
    assert same(reduced("avg"), {0: [(0, 1.0, 1), (60, nan, 3), (120, 1.0, 3)], 1: [(120, -0.5, 4)]})
    # NaN ranks above every number, as in PostgreSQL: min skips it, max returns it
    assert same(reduced("min"), {0: [(0, 1.0, 1), (60, 5.0, 3), (120, 3.0, 3)], 1: [(120, -2.0, 4)]})
    assert same(reduced("max"), {0: [(0, 1.0, 1), (60, nan, 3), (120, 3.0, 3)], 1: [(120, -2.0, 4)]})
    assert reduce_partials(b"", b"", b"", b"", group_of, 2, (0, 180, 60), "avg") == []
