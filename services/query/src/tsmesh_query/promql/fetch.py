"""Stage 4: the raw samples of the selected series over each selector's span, as numpy arrays.

Samples stream from PostgreSQL as binary ``COPY`` (fixed 38-byte rows of series id, timestamp and
value) and are decoded by numpy in one step, with no Python object per row. ``max_points`` is
enforced while the bytes arrive: past the budget the rest of the copy is dropped (``copyrows``).
"""

from __future__ import annotations

import asyncpg
import numpy as np

from tsmesh_common.errors import ResourceExhausted
from tsmesh_query.config import QueryLimits
from tsmesh_query.promql.copyrows import CopyRows
from tsmesh_query.promql.rollups import read_rollups
from tsmesh_query.promql.selection import Selection
from tsmesh_query.promql.values import Floats, Ints, RawSeries, SampleSet

NS_PER_MS = 1_000_000
POINTS_SQL = """
SELECT series_id, ts, value FROM ts.points
WHERE series_id = ANY($1::bigint[]) AND ts >= $2 AND ts <= $3
ORDER BY series_id, ts
"""
ROW = np.dtype(
    [("n", ">i2"), ("l1", ">i4"), ("sid", ">i8"), ("l2", ">i4"), ("ts", ">i8"), ("l3", ">i4"), ("value", ">f8")]
)


async def fetch_samples(conn: asyncpg.Connection, selection: Selection, limits: QueryLimits) -> SampleSet:
    """Every selector's series with their samples in ``[lo, hi]`` ms (from the 1-minute rollup for
    the selectors and series it answers exactly, ``rollups.py``); more than ``max_points`` samples
    in all is RESOURCE_EXHAUSTED."""
    samples = SampleSet()
    budget = limits.max_points
    for key, series in selection.by_selector.items():
        lo, hi = selection.plan.spans[key]
        ids = [s.series_id for s in series]
        reduced: dict[int, tuple[Ints, Floats, Ints]] = {}
        if ids and key in selection.plan.rollups:
            try:
                reduced, kept = await read_rollups(conn, ids, lo, hi, selection.plan.rollups[key], budget)
            except ResourceExhausted:
                raise ResourceExhausted(
                    "max_points", f"the query would read more than {limits.max_points} samples"
                ) from None
            budget -= kept
        raw_ids = [one for one in ids if one not in reduced]
        sid, ts, values = await _raw(conn, raw_ids, lo, hi, budget, limits)
        budget -= len(sid)
        out: list[RawSeries] = []
        for s in series:
            part = reduced.get(s.series_id)
            if part is not None:
                out.append(RawSeries(s.labels, *part))
                continue
            first, last = np.searchsorted(sid, s.series_id, "left"), np.searchsorted(sid, s.series_id, "right")
            out.append(RawSeries(s.labels, ts[first:last], values[first:last]))
        samples.by_selector[key] = out
    return samples


async def _raw(
    conn: asyncpg.Connection, ids: list[int], lo: int, hi: int, budget: int, limits: QueryLimits
) -> tuple[Ints, Ints, Floats]:
    """(series id, ts ms, value) of the raw samples of ``ids`` in ``[lo, hi]`` ms, by (series id, ts)."""
    collector = CopyRows(ROW, budget)
    if ids:
        await conn.copy_from_query(
            POINTS_SQL, ids, lo * NS_PER_MS, hi * NS_PER_MS + NS_PER_MS - 1, output=collector, format="binary"
        )
    try:
        rows = collector.rows()
    except ResourceExhausted:
        raise ResourceExhausted("max_points", f"the query would read more than {limits.max_points} samples") from None
    return rows["sid"].astype(np.int64), rows["ts"].astype(np.int64) // NS_PER_MS, rows["value"].astype(np.float64)
