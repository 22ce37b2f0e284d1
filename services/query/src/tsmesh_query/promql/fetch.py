"""Stage 4: the raw samples of the selected series over each selector's span, as numpy arrays.

Rows are read through a cursor in chunks and turned into arrays as they come, so the limit
``max_points`` is enforced with at most one chunk of rows in memory (runs inside the snapshot
transaction of the read).
"""

from __future__ import annotations

import asyncpg
import numpy as np

from tsmesh_common.errors import ResourceExhausted
from tsmesh_query.config import QueryLimits
from tsmesh_query.promql.selection import Selection
from tsmesh_query.promql.values import Floats, Ints, RawSeries, SampleSet

NS_PER_MS = 1_000_000
CHUNK_ROWS = 50_000
POINTS_SQL = """
SELECT series_id, ts, value FROM ts.points
WHERE series_id = ANY($1::bigint[]) AND ts >= $2 AND ts <= $3
ORDER BY series_id, ts
"""


async def fetch_samples(conn: asyncpg.Connection, selection: Selection, limits: QueryLimits) -> SampleSet:
    """Every selector's series with their samples in ``[lo, hi]`` ms; more than ``max_points``
    samples in all is RESOURCE_EXHAUSTED."""
    samples = SampleSet()
    budget = limits.max_points
    for key, series in selection.by_selector.items():
        lo, hi = selection.plan.spans[key]
        ids = [s.series_id for s in series]
        sid_parts: list[Ints] = []
        ts_parts: list[Ints] = []
        value_parts: list[Floats] = []
        if ids:
            cursor = await conn.cursor(POINTS_SQL, ids, lo * NS_PER_MS, hi * NS_PER_MS + NS_PER_MS - 1)
            while rows := await cursor.fetch(CHUNK_ROWS):
                budget -= len(rows)
                if budget < 0:
                    raise ResourceExhausted("max_points", f"the query would read more than {limits.max_points} samples")
                sid_parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
                ts_parts.append(np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows)) // NS_PER_MS)
                value_parts.append(np.fromiter((r[2] for r in rows), dtype=np.float64, count=len(rows)))
        sid = np.concatenate(sid_parts) if sid_parts else np.zeros(0, dtype=np.int64)
        ts = np.concatenate(ts_parts) if ts_parts else np.zeros(0, dtype=np.int64)
        values = np.concatenate(value_parts) if value_parts else np.zeros(0, dtype=np.float64)
        out: list[RawSeries] = []
        for s in series:
            first, last = np.searchsorted(sid, s.series_id, "left"), np.searchsorted(sid, s.series_id, "right")
            out.append(RawSeries(s.labels, ts[first:last], values[first:last]))
        samples.by_selector[key] = out
    return samples
