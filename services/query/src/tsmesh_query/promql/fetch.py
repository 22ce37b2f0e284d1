"""Stage 4: the raw samples of the selected series over each selector's span, as numpy arrays."""

from __future__ import annotations

import asyncpg
import numpy as np

from tsmesh_common.errors import ResourceExhausted
from tsmesh_query.config import QueryLimits
from tsmesh_query.promql.selection import Selection
from tsmesh_query.promql.values import RawSeries, SampleSet

NS_PER_MS = 1_000_000
POINTS_SQL = """
SELECT series_id, ts, value FROM ts.points
WHERE series_id = ANY($1::bigint[]) AND ts >= $2 AND ts <= $3
ORDER BY series_id, ts LIMIT $4
"""


async def fetch_samples(conn: asyncpg.Connection, selection: Selection, limits: QueryLimits) -> SampleSet:
    """Every selector's series with their samples in ``[lo, hi]`` ms; more than ``max_points``
    samples in all is RESOURCE_EXHAUSTED, refused before they are held in memory."""
    samples = SampleSet()
    budget = limits.max_points
    for key, series in selection.by_selector.items():
        lo, hi = selection.plan.spans[key]
        ids = [s.series_id for s in series]
        rows = (
            await conn.fetch(POINTS_SQL, ids, lo * NS_PER_MS, hi * NS_PER_MS + NS_PER_MS - 1, budget + 1) if ids else []
        )
        if len(rows) > budget:
            raise ResourceExhausted("max_points", f"the query would read more than {limits.max_points} samples")
        budget -= len(rows)
        sid = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)) // NS_PER_MS
        values = np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows))
        out: list[RawSeries] = []
        for s in series:
            lo_i, hi_i = np.searchsorted(sid, s.series_id, "left"), np.searchsorted(sid, s.series_id, "right")
            out.append(RawSeries(s.labels, ts[lo_i:hi_i], values[lo_i:hi_i]))
        samples.by_selector[key] = out
    return samples
