"""SQL for one contiguous time range at one resolution, aggregated to step buckets per group.

Inputs: ``$1`` series ids, ``$2`` their group index, ``$3``/``$4`` the range ``[lo, hi)``.
Rows are keyed by group index, or by series id where ``row_mode`` says so.
Output: one row of four parallel arrays (group key, bucket start, value, point count) as packed
big-endian bytes, in no particular order (``chunk.group_arrays`` groups and sorts them with numpy):
no sort and no per-group aggregation in PostgreSQL, and no Python object per bucket. The row is
all NULL when no bucket has points.

Rollup reads follow the contract of ``ts.rollup_pending``: a (series, rollup bucket) overlapped by
a pending range is recomputed from raw points, the others come from the rollup, all in the
caller's snapshot. When no pending range overlaps the read (the usual case), one-time filters
(``EXISTS (SELECT 1 FROM pend)``, evaluated once per statement) switch the overlay off: rollup
rows are read without an anti-join and the raw recompute is not run. ``first``/``last`` order
points by (timestamp, series id).
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

# One aggregate row over every bucket row (the four aggregates see the rows in the same order).
_WRAP = """
SELECT string_agg(int8send(g::bigint), ''::bytea) AS groups, string_agg(int8send(b), ''::bytea) AS buckets,
       string_agg(float8send(v), ''::bytea) AS vals, string_agg(int8send(n), ''::bytea) AS counts
FROM ({inner}) AS x
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
    AND NOT EXISTS (SELECT 1 FROM pend)
  UNION ALL
  SELECT r.series_id, r.bucket, r.count, r.sum, r.min, r.max, r.first_ts, r.first, r.last_ts, r.last
  FROM ts.{table} r
  WHERE r.series_id = ANY($1::bigint[]) AND r.bucket >= $3::bigint AND r.bucket < $4::bigint
    AND EXISTS (SELECT 1 FROM pend)
    AND NOT EXISTS (SELECT 1 FROM dirty WHERE dirty.series_id = r.series_id AND dirty.b = r.bucket)
  UNION ALL
  SELECT p.series_id, dirty.b, count(*), sum(p.value), min(p.value), max(p.value),
         min(p.ts), (array_agg(p.value ORDER BY p.ts))[1], max(p.ts), (array_agg(p.value ORDER BY p.ts DESC))[1]
  FROM dirty JOIN ts.points p ON p.series_id = dirty.series_id AND p.ts >= dirty.b AND p.ts < dirty.b + {width}
  WHERE EXISTS (SELECT 1 FROM pend)
  GROUP BY p.series_id, dirty.b
)
{select}
"""

_ROLLUP_GROUPED = """SELECT s.g, parts.bucket - parts.bucket % {step} AS b, sum(parts.count)::bigint AS n, {value} AS v
FROM parts JOIN s USING (series_id)
GROUP BY 1, 2"""

# The partial of a rollup row that ``chunk.reduce_partials`` combines per (group, step bucket) with
# numpy (a PostgreSQL hash aggregate over every rollup row cost ~1.6x the plain read).
_ROLLUP_PARTIAL = {"avg": "parts.sum", "sum": "parts.sum", "count": "parts.sum", "min": "parts.min", "max": "parts.max"}

# rows keyed by series id (the caller maps ids to groups), so no join with ``s`` per row
_ROLLUP_DIRECT = """SELECT parts.series_id AS g, parts.bucket AS b, parts.count::bigint AS n, {value} AS v
FROM parts"""

_TABLES: dict[int, str] = {query_pb2.RESOLUTION_1M: "rollup_1m", query_pb2.RESOLUTION_1H: "rollup_1h"}


def series_sql(with_containment: bool) -> str:
    """Candidate series of a tenant and metric, optionally narrowed by ``labels @> $4``."""
    return SERIES_SQL.format(containment="AND labels @> $4::jsonb" if with_containment else "")


BY_GROUP, BY_SERIES, PARTIALS = "group", "series", "partials"


def row_mode(resolution: int, aggregation: str, step: int, one_series_per_group: bool) -> str:
    """What the rows of ``range_sql`` are: ``BY_GROUP`` one per (group index, step bucket);
    ``BY_SERIES`` one per (series id, step bucket), when rollup rows are the buckets; ``PARTIALS``
    one per (series id, rollup row) with its count and partial (sum, min or max), combined per
    (group, step bucket) by ``chunk.reduce_partials``. ``first``/``last`` over several rollup rows
    stay in PostgreSQL (they order by timestamp, then series id)."""
    if resolution == query_pb2.RESOLUTION_RAW:
        return BY_GROUP
    if one_series_per_group and step == RESOLUTION_WIDTH[resolution]:
        return BY_SERIES
    return PARTIALS if aggregation in _ROLLUP_PARTIAL else BY_GROUP


def range_sql(resolution: int, aggregation: str, step: int, one_series_per_group: bool = False) -> str:
    """The statement computing step buckets (or their partials, see ``row_mode``) over ``[$3, $4)``
    at ``resolution``."""
    mode = row_mode(resolution, aggregation, step, one_series_per_group)
    if resolution == query_pb2.RESOLUTION_RAW:
        inner = _RAW.format(step=int(step), value=_RAW_VALUE[aggregation])
    else:
        width = RESOLUTION_WIDTH[resolution]
        if mode == BY_SERIES:
            select = _ROLLUP_DIRECT.format(value=_ROLLUP_ROW_VALUE[aggregation])
        elif mode == PARTIALS:
            select = _ROLLUP_DIRECT.format(value=_ROLLUP_PARTIAL[aggregation])
        else:
            select = _ROLLUP_GROUPED.format(step=int(step), value=_ROLLUP_VALUE[aggregation])
        inner = _ROLLUP.format(width=width, table=_TABLES[resolution], select=select)
    return _WRAP.format(inner=inner)
