"""Finite values whose sums leave the float8 range: answers follow IEEE addition (+-Infinity on
overflow, NaN stays NaN) at every resolution, never an error."""

from __future__ import annotations

import math
import uuid

import pytest
from test_range import AGGS, BASE, SECOND, as_rows, request
from tsmesh.v1 import query_pb2
from tsq_reference import RawPoint, reference
from tsq_support import HOUR_NS, Loader, Running

HUGE = 1e308
# step (s) -> the resolution serving a 1 h window: 90 s fits no rollup, 60 s is the 1m rollup row
# itself, 120 s combines two 1m rows, 3600 s is the 1h rollup row
STEPS = {
    90: query_pb2.RESOLUTION_RAW,
    60: query_pb2.RESOLUTION_1M,
    120: query_pb2.RESOLUTION_1M,
    3600: query_pb2.RESOLUTION_1H,
}


def same_value(got: float | None, want: float | None) -> bool:
    if got is None or want is None:
        return got is want
    if math.isnan(want):
        return math.isnan(got)
    return got == want or math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)


@pytest.mark.parametrize("pending", [False, True], ids=["rolled-up", "pending"])
async def test_sums_past_the_float8_range_saturate(service: Running, loader: Loader, pending: bool) -> None:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    a = await loader.series(tenant, "big", {"host": "a", "dc": "x"})
    b = await loader.series(tenant, "big", {"host": "b", "dc": "x"})
    c = await loader.series(tenant, "big", {"host": "c", "dc": "y"})
    raw = [
        RawPoint(a, {"host": "a", "dc": "x"}, BASE, HUGE),
        RawPoint(a, {"host": "a", "dc": "x"}, BASE + 60 * SECOND, HUGE),
        RawPoint(a, {"host": "a", "dc": "x"}, BASE + 180 * SECOND, -5.0),
        RawPoint(b, {"host": "b", "dc": "x"}, BASE + 30 * SECOND, HUGE),
        # linear fill between finite ends whose difference overflows
        RawPoint(c, {"host": "c", "dc": "y"}, BASE, HUGE),
        RawPoint(c, {"host": "c", "dc": "y"}, BASE + 240 * SECOND, -HUGE),
    ]
    await loader.points([(p.series_id, p.ts, p.value) for p in raw], pending=pending)
    if not pending:  # else every rollup bucket read is recomputed from raw points
        await loader.refresh_rollups([a, b, c])
    start, end = BASE, BASE + HOUR_NS
    checked = 0
    for step_s, resolution in STEPS.items():
        step = step_s * SECOND
        for agg in sorted(AGGS):
            for group_by in (None, ("dc",)):
                for fill in ("none", "linear", "previous"):
                    response = await service.stub.QueryRange(
                        request("big", start, end, step, agg, group_by, fill), metadata=service.md(tenant), timeout=10
                    )
                    assert response.resolution == resolution
                    got = as_rows(response)
                    want = reference(raw, start, end, step, agg, group_by, fill)
                    context = (step_s, agg, group_by, fill)
                    assert [labels for labels, _ in got] == [labels for labels, _ in want], context
                    for (_, got_rows), (_, want_rows) in zip(got, want, strict=True):
                        assert [(t, n) for t, _, n in got_rows] == [(t, n) for t, _, n in want_rows], context
                        for (_, gv, _), (_, wv, _) in zip(got_rows, want_rows, strict=True):
                            assert same_value(gv, wv), (context, gv, wv)
                    checked += 1
    assert checked == len(STEPS) * len(AGGS) * 2 * 3
    # the overflowing sums are really there: +inf, not an error or a clipped finite value
    response = await service.stub.QueryRange(
        request("big", start, end, HOUR_NS, "sum", ("dc",), "none"), metadata=service.md(tenant), timeout=10
    )
    assert [[bucket.value for bucket in series.buckets] for series in response.series] == [[math.inf], [0.0]]
    response = await service.stub.QueryRange(
        request("big", start, end, 60 * SECOND, "max", None, "linear"), metadata=service.md(tenant), timeout=10
    )
    assert [bucket.value for bucket in response.series[2].buckets[:5]] == [HUGE, HUGE / 2, 0.0, -HUGE / 2, -HUGE]
