"""SQL for one contiguous time range at one resolution, aggregated to step buckets per group.

Inputs: ``$1`` series ids, ``$2`` their group index, ``$3``/``$4`` the range ``[lo, hi)``.
Rows are keyed by group index, or by series id where ``keyed_by_series`` says so.
Output: one row per group with parallel arrays (bucket starts, values, point counts) as packed
big-endian bytes, which numpy reads without one Python object per bucket.

Rollup reads follow the contract of ``ts.rollup_pending``: a (series, rollup bucket) overlapped by
a pending range is recomputed from raw points, the others come from the rollup, all in the
caller's snapshot. ``first``/``last`` order points by (timestamp, series id).
"""

from __future__ import annotations

from tsmesh.v1 import query_pb2

from tsmesh_query.plan import RESOLUTION_WIDTH

SERIES_SQL = """
SELECT series_id, labels::text AS labels FROM ts.series
WHERE tenant_id = $1 AND metric = $2 {containment}
ORDER BY series_id LIMIT $3
"""

_RAW_VALUE = {
    "avg": "sum(p.value) / count(*)",
    "min": "min(p.value)",
    "max": "max(p.value)",
    "sum": "sum(p.value)",
    "count": "count(*)::float8",
    "first": "(array_agg(p.value ORDER BY p.ts, p.series_id))[1]",
    "last": "(array_agg(p.value ORDER BY p.ts DESC, p.series_id DESC))[1]",
}

_ROLLUP_VALUE = {
    "avg": "sum(parts.sum) / sum(parts.count)",
    "min": "min(parts.min)",
    "max": "max(parts.max)",
    "sum": "sum(parts.sum)",
    "count": "sum(parts.count)::float8",
    "first": "(array_agg(parts.first ORDER BY parts.first_ts, parts.series_id))[1]",
    "last": "(array_agg(parts.last ORDER BY parts.last_ts DESC, parts.series_id DESC))[1]",
}

# Arrays are aggregated from a sorted subquery (no per-group sort; PostgreSQL feeds the rows in
# that order). The reader still checks the order and sorts if ever needed (``chunk.from_arrays``).
_WRAP = """
SELECT g, string_agg(int8send(b), ''::bytea) AS buckets, string_agg(float8send(v), ''::bytea) AS vals,
       string_agg(int8send(n), ''::bytea) AS counts
FROM (SELECT * FROM ({inner}) AS y ORDER BY g, b) AS x GROUP BY g
"""

# Each group is one series and the step is the rollup width: a rollup row (or its raw recompute) is
# already one step bucket, so no second aggregation is needed.
_ROLLUP_ROW_VALUE = {
    "avg": "parts.sum / parts.count",
    "min": "parts.min",
    "max": "parts.max",
    "sum": "parts.sum",
    "count": "parts.count::float8",
    "first": "parts.first",
    "last": "parts.last",
}

_RAW = """
SELECT s.g, p.ts - p.ts % {step} AS b, count(*)::bigint AS n, {value} AS v
FROM unnest($1::bigint[], $2::int[]) AS s(series_id, g)
JOIN ts.points p ON p.series_id = s.series_id
WHERE p.ts >= $3::bigint AND p.ts < $4::bigint
GROUP BY 1, 2
"""

_ROLLUP = """
WITH s AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS s(series_id, g)),
pend AS (
  SELECT rp.series_id, greatest(rp.lo, $3::bigint) AS lo, least(rp.hi, $4::bigint - 1) AS hi
  FROM ts.rollup_pending rp
  WHERE rp.series_id = ANY($1::bigint[]) AND rp.hi >= $3::bigint AND rp.lo < $4::bigint
),
dirty AS (
  SELECT DISTINCT pend.series_id, d.b
  FROM pend, generate_series(pend.lo - pend.lo % {width}, pend.hi - pend.hi % {width}, {width}::bigint) AS d(b)
),
parts AS (
  SELECT r.series_id, r.bucket, r.count, r.sum, r.min, r.max, r.first_ts, r.first, r.last_ts, r.last
  FROM ts.{table} r
  WHERE r.series_id = ANY($1::bigint[]) AND r.bucket >= $3::bigint AND r.bucket < $4::bigint
    AND NOT EXISTS (SELECT 1 FROM dirty WHERE dirty.series_id = r.series_id AND dirty.b = r.bucket)
  UNION ALL
  SELECT p.series_id, dirty.b, count(*), sum(p.value), min(p.value), max(p.value),
         min(p.ts), (array_agg(p.value ORDER BY p.ts))[1], max(p.ts), (array_agg(p.value ORDER BY p.ts DESC))[1]
  FROM dirty JOIN ts.points p ON p.series_id = dirty.series_id AND p.ts >= dirty.b AND p.ts < dirty.b + {width}
  GROUP BY p.series_id, dirty.b
)
{select}
"""

_ROLLUP_GROUPED = """SELECT s.g, parts.bucket - parts.bucket % {step} AS b, sum(parts.count)::bigint AS n, {value} AS v
FROM parts JOIN s USING (series_id)
GROUP BY 1, 2"""

# rows keyed by series id (the caller maps ids to groups), so no join with ``s`` per row
_ROLLUP_DIRECT = """SELECT parts.series_id AS g, parts.bucket AS b, parts.count::bigint AS n, {value} AS v
FROM parts"""

_TABLES: dict[int, str] = {query_pb2.RESOLUTION_1M: "rollup_1m", query_pb2.RESOLUTION_1H: "rollup_1h"}


def series_sql(with_containment: bool) -> str:
    """Candidate series of a tenant and metric, optionally narrowed by ``labels @> $4``."""
    return SERIES_SQL.format(containment="AND labels @> $4::jsonb" if with_containment else "")


def keyed_by_series(resolution: int, step: int, one_series_per_group: bool) -> bool:
    """Whether ``range_sql`` returns rows keyed by series id (rollup rows used as buckets) instead
    of by group index."""
    return one_series_per_group and resolution != query_pb2.RESOLUTION_RAW and step == RESOLUTION_WIDTH[resolution]


def range_sql(resolution: int, aggregation: str, step: int, one_series_per_group: bool = False) -> str:
    """The statement computing step buckets per group over ``[$3, $4)`` at ``resolution``."""
    if resolution == query_pb2.RESOLUTION_RAW:
        inner = _RAW.format(step=int(step), value=_RAW_VALUE[aggregation])
    else:
        width = RESOLUTION_WIDTH[resolution]
        if keyed_by_series(resolution, step, one_series_per_group):
            select = _ROLLUP_DIRECT.format(value=_ROLLUP_ROW_VALUE[aggregation])
        else:
            select = _ROLLUP_GROUPED.format(step=int(step), value=_ROLLUP_VALUE[aggregation])
        inner = _ROLLUP.format(width=width, table=_TABLES[resolution], select=select)
    return _WRAP.format(inner=inner)
