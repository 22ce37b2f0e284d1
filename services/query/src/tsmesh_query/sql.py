"""SQL for one contiguous time range at one resolution, aggregated to step buckets per group.

Inputs: ``$1`` series ids, ``$2`` their group index, ``$3``/``$4`` the range ``[lo, hi)``.
Rows are keyed by group index, or by series id where ``row_mode`` says so.
Output: rows of four parallel arrays (group key, bucket start, value, point count) as packed
big-endian bytes, in no particular order (``chunk.group_arrays`` groups and sorts them with numpy):
no sort and no per-group aggregation in PostgreSQL, and no Python object per bucket. A row is all
NULL when its source has no bucket; there is one row per source (see ``range_sql``), the caller
concatenates them.

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

# float8 ``sum()`` raises "value out of range: overflow" (SQLSTATE 22003) when finite values add
# past the float8 range. Statements use it as is (the hot path); one that raises is run again with
# the saturating sum (``range_sql(saturating=True)``): the exact numeric sum as float8, +-Infinity past
# the range, NaN kept (NaN ranks above every numeric, so it is tested first). These are ingest's
# semantics (``tsmesh_ingest.rollups``' fallback, ``store.SATURATING_SUM``): IEEE addition's answer
# with the overflow kept as +-Infinity.
_FLOAT8_SUM = "sum(p.value)"
_SATURATING_SUM = (
    "CASE WHEN sum(p.value::numeric) = 'NaN'::numeric THEN 'NaN'::float8 "
    "WHEN sum(p.value::numeric) > 1.7976931348623157e308 THEN 'Infinity'::float8 "
    "WHEN sum(p.value::numeric) < -1.7976931348623157e308 THEN '-Infinity'::float8 "
    "ELSE sum(p.value::numeric)::float8 END"
)

_RAW_VALUE = {
    "avg": "{sum} / count(*)",
    "min": "min(p.value)",
    "max": "max(p.value)",
    "sum": "{sum}",
    "count": "count(*)::float8",
    "first": "(array_agg(p.value ORDER BY p.ts, p.series_id))[1]",
    "last": "(array_agg(p.value ORDER BY p.ts DESC, p.series_id DESC))[1]",
}

# Over several rollup rows only first/last aggregate in PostgreSQL (the others are PARTIALS).
_ROLLUP_VALUE = {
    "first": "(array_agg(parts.first ORDER BY parts.first_ts, parts.series_id))[1]",
    "last": "(array_agg(parts.last ORDER BY parts.last_ts DESC, parts.series_id DESC))[1]",
}

# One aggregate row of packed arrays over the rows of ``source`` (the four aggregates see the rows in
# the same order).
_PACK = """SELECT string_agg(int8send({g}), ''::bytea) AS groups, string_agg(int8send({b}), ''::bytea) AS buckets,
       string_agg(float8send({v}), ''::bytea) AS vals, string_agg(int8send({n}), ''::bytea) AS counts
FROM {source}"""

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

# The pending overlay of a rollup read, then its three row sources: rollup rows when no pending range
# overlaps the read, rollup rows not overlapped when one does, and the overlapped buckets recomputed.
_OVERLAY = """
WITH s AS (SELECT * FROM unnest($1::bigint[], $2::int[]) AS s(series_id, g)),
pend AS (
  SELECT rp.series_id, greatest(rp.lo, $3::bigint) AS lo, least(rp.hi, $4::bigint - 1) AS hi
  FROM ts.rollup_pending rp
  WHERE rp.series_id = ANY($1::bigint[]) AND rp.hi >= $3::bigint AND rp.lo < $4::bigint
),
dirty AS (
  SELECT DISTINCT pend.series_id, d.b
  FROM pend, generate_series(pend.lo - pend.lo % {width}, pend.hi - pend.hi % {width}, {width}::bigint) AS d(b)
)"""
_CLEAN = """
  SELECT r.series_id, r.bucket, r.count, r.sum, r.min, r.max, r.first_ts, r.first, r.last_ts, r.last
  FROM ts.{table} r
  WHERE r.series_id = ANY($1::bigint[]) AND r.bucket >= $3::bigint AND r.bucket < $4::bigint
    AND NOT EXISTS (SELECT 1 FROM pend)"""
_OVERLAID = """
  SELECT r.series_id, r.bucket, r.count, r.sum, r.min, r.max, r.first_ts, r.first, r.last_ts, r.last
  FROM ts.{table} r
  WHERE r.series_id = ANY($1::bigint[]) AND r.bucket >= $3::bigint AND r.bucket < $4::bigint
    AND EXISTS (SELECT 1 FROM pend)
    AND NOT EXISTS (SELECT 1 FROM dirty WHERE dirty.series_id = r.series_id AND dirty.b = r.bucket)"""
_RECOMPUTED = """
  SELECT p.series_id, dirty.b AS bucket, count(*) AS count, {sum} AS sum, min(p.value) AS min,
         max(p.value) AS max, min(p.ts) AS first_ts, (array_agg(p.value ORDER BY p.ts))[1] AS first,
         max(p.ts) AS last_ts, (array_agg(p.value ORDER BY p.ts DESC))[1] AS last
  FROM dirty JOIN ts.points p ON p.series_id = dirty.series_id AND p.ts >= dirty.b AND p.ts < dirty.b + {width}
  WHERE EXISTS (SELECT 1 FROM pend)
  GROUP BY p.series_id, dirty.b"""

_ROLLUP_GROUPED = """SELECT s.g, parts.bucket - parts.bucket % {step} AS b, sum(parts.count)::bigint AS n, {value} AS v
FROM parts JOIN s USING (series_id)
GROUP BY 1, 2"""

# The partial of a rollup row that ``chunk.reduce_partials`` combines per (group, step bucket) with
# numpy (a PostgreSQL hash aggregate over every rollup row cost ~1.6x the plain read).
_ROLLUP_PARTIAL = {"avg": "parts.sum", "sum": "parts.sum", "count": "parts.sum", "min": "parts.min", "max": "parts.max"}

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


def range_sql(
    resolution: int, aggregation: str, step: int, one_series_per_group: bool = False, saturating: bool = False
) -> str:
    """The statement computing step buckets (or their partials, see ``row_mode``) over ``[$3, $4)``
    at ``resolution``; ``saturating`` sums raw points without raising on float8 overflow.

    Rows of packed arrays: one for raw reads and grouped rollup reads; one per row source (all NULL
    but the first when no pending range overlaps) when rollup rows are returned as they are, each
    packed where it is read (no Append and subquery layers between the scan and the aggregates)."""
    mode = row_mode(resolution, aggregation, step, one_series_per_group)
    total = _SATURATING_SUM if saturating else _FLOAT8_SUM
    if resolution == query_pb2.RESOLUTION_RAW:
        raw = _RAW.format(step=int(step), value=_RAW_VALUE[aggregation].replace("{sum}", total))
        return _PACK.format(g="x.g::bigint", b="x.b", v="x.v", n="x.n", source=f"({raw}) AS x")
    width, table = RESOLUTION_WIDTH[resolution], _TABLES[resolution]
    overlay = _OVERLAY.format(width=width)
    sources = (_CLEAN.format(table=table), _OVERLAID.format(table=table), _RECOMPUTED.format(sum=total, width=width))
    if mode == BY_GROUP:
        grouped = _ROLLUP_GROUPED.format(step=int(step), value=_ROLLUP_VALUE[aggregation])
        parts = "\n  UNION ALL".join(sources)
        return f"{overlay},\nparts AS ({parts}\n)\n" + _PACK.format(
            g="x.g::bigint", b="x.b", v="x.v", n="x.n", source=f"({grouped}) AS x"
        )
    value = _ROLLUP_ROW_VALUE[aggregation] if mode == BY_SERIES else _ROLLUP_PARTIAL[aggregation]
    packs = [
        _PACK.format(
            g="parts.series_id", b="parts.bucket", v=value, n="parts.count::bigint", source=f"({src}) AS parts"
        )
        for src in sources
    ]
    return overlay + "\n" + "\nUNION ALL\n".join(packs)
