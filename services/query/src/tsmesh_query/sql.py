"""SQL for one contiguous time range at one resolution, aggregated to step buckets per group.

Inputs: ``$1`` series ids, ``$2`` their group index, ``$3``/``$4`` the range ``[lo, hi)``.
Output: one row per group with parallel arrays (bucket starts, values, point counts), which
asyncpg decodes in C, so Python never handles one object per raw row.

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

_WRAP = """
SELECT g, array_agg(b ORDER BY b) AS buckets, array_agg(v ORDER BY b) AS vals, array_agg(n ORDER BY b) AS counts
FROM ({inner}) AS x GROUP BY g
"""

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
SELECT s.g, parts.bucket - parts.bucket % {step} AS b, sum(parts.count)::bigint AS n, {value} AS v
FROM parts JOIN s USING (series_id)
GROUP BY 1, 2
"""

_TABLES: dict[int, str] = {query_pb2.RESOLUTION_1M: "rollup_1m", query_pb2.RESOLUTION_1H: "rollup_1h"}


def series_sql(with_containment: bool) -> str:
    """Candidate series of a tenant and metric, optionally narrowed by ``labels @> $4``."""
    return SERIES_SQL.format(containment="AND labels @> $4::jsonb" if with_containment else "")


def range_sql(resolution: int, aggregation: str, step: int) -> str:
    """The statement computing step buckets per group over ``[$3, $4)`` at ``resolution``."""
    if resolution == query_pb2.RESOLUTION_RAW:
        inner = _RAW.format(step=int(step), value=_RAW_VALUE[aggregation])
    else:
        inner = _ROLLUP.format(
            step=int(step),
            width=RESOLUTION_WIDTH[resolution],
            table=_TABLES[resolution],
            value=_ROLLUP_VALUE[aggregation],
        )
    return _WRAP.format(inner=inner)
