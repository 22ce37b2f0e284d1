"""Selectors answered from ``ts.rollup_1m`` instead of raw points, with a provably identical answer.

A 1-minute bucket keeps its first and last sample, its count and (migration 0003) whether its
samples never go down (``ascending``) and never share a millisecond (``distinct_ms``). When every
time a selector is evaluated at (``te``, after offset and @) is a whole minute and every range is
whole minutes, a window ``[te - range, te]`` is whole buckets plus the samples at ``te``, which is
the first of the bucket starting at ``te`` when the bucket's samples have distinct milliseconds. So
the series made of each bucket's first and last sample, the last one standing for ``count - 1``
samples (``RawSeries.weights``), gives every window the same first and last sample and the same
count as the raw samples; and, when no bucket has a drop inside, the same counter resets, added in
the same order. That is all ``rate``, ``increase``, ``delta``, ``count_over_time``,
``last_over_time``, ``present_over_time`` and a plain instant selector (last sample within the
5-minute lookback) read. Everything else reads raw.

A series is read raw instead when any of its buckets in the span is covered by a pending range
(not yet recomputed), has a non-finite sum (NaN or infinities take the per-window loop on raw
data), an unknown or false ``distinct_ms``, or, for ``rate``/``increase``, an unknown or false
``ascending``.
"""

from __future__ import annotations

import asyncpg
import numpy as np

from tsmesh_query.promql import ast
from tsmesh_query.promql.copyrows import CopyRows
from tsmesh_query.promql.values import Floats, Ints

BUCKET_MS = 60_000
NS_PER_MS = 1_000_000
# function -> whether it reads counter resets (needs every bucket ``ascending``)
ROLLUP_FUNCTIONS = {
    "rate": True,
    "increase": True,
    "delta": False,
    "count_over_time": False,
    "last_over_time": False,
    "present_over_time": False,
}
SelectorKey = tuple[tuple[str, str, str], ...]

# $1 series ids, $2/$3 the bucket range [lo, hi] (ns), $4 whether counter resets are read.
# ``ok`` says the bucket can stand for its raw samples (see the module docstring).
BUCKETS_SQL = """
SELECT series_id, count, first_ts, first, last_ts, last,
       (sum - sum = 0 AND coalesce(distinct_ms, false) AND (NOT $4::bool OR coalesce(ascending, false))) AS ok
FROM ts.rollup_1m
WHERE series_id = ANY($1::bigint[]) AND bucket >= $2 AND bucket <= $3
ORDER BY series_id, bucket
"""
PENDING_SQL = """
SELECT DISTINCT series_id FROM ts.rollup_pending
WHERE series_id = ANY($1::bigint[]) AND hi >= $2 AND lo < $3
"""
ROW = np.dtype(
    [
        ("n", ">i2"),
        ("l_sid", ">i4"),
        ("sid", ">i8"),
        ("l_count", ">i4"),
        ("count", ">i8"),
        ("l_first_ts", ">i4"),
        ("first_ts", ">i8"),
        ("l_first", ">i4"),
        ("first", ">f8"),
        ("l_last_ts", ">i4"),
        ("last_ts", ">i8"),
        ("l_last", ">i4"),
        ("last", ">f8"),
        ("l_ok", ">i4"),
        ("ok", "u1"),
    ]
)


class _Uses:
    """Per selector: None once a use needs raw samples, else whether a use reads counter resets."""

    def __init__(self, start_ms: int, end_ms: int, step_ms: int) -> None:
        self.start_ms, self.end_ms, self.step_ms = start_ms, end_ms, step_ms
        self.by_key: dict[SelectorKey, bool | None] = {}

    def aligned(self, offset_ms: int, at: ast.At | None) -> bool:
        if at is not None:
            t = {"start": self.start_ms, "end": self.end_ms}.get(at.kind, at.ms)
            return (t - offset_ms) % BUCKET_MS == 0
        whole_steps = self.step_ms % BUCKET_MS == 0 or self.start_ms == self.end_ms
        return whole_steps and (self.start_ms - offset_ms) % BUCKET_MS == 0

    def add(self, key: SelectorKey, counter: bool | None) -> None:
        if counter is None or (key in self.by_key and self.by_key[key] is None):
            self.by_key[key] = None
        else:
            self.by_key[key] = counter or bool(self.by_key.get(key))

    def walk(self, node: ast.Expr, raw_only: bool = False) -> None:
        if isinstance(node, ast.VectorSelector):
            ok = not raw_only and self.aligned(node.offset_ms, node.at)
            self.add(node.matchers, False if ok else None)
        elif isinstance(node, ast.MatrixSelector):
            self.add(node.selector.matchers, None)
        elif isinstance(node, ast.Subquery):
            self.walk(node.expr, raw_only=True)
        elif isinstance(node, ast.Unary):
            self.walk(node.expr, raw_only)
        elif isinstance(node, ast.Binary):
            self.walk(node.lhs, raw_only)
            self.walk(node.rhs, raw_only)
        elif isinstance(node, ast.Aggregate):
            self.walk(node.expr, raw_only)
            if node.param is not None:
                self.walk(node.param, raw_only)
        elif isinstance(node, ast.Call):
            for arg in node.args:
                if isinstance(arg, ast.MatrixSelector) and node.func in ROLLUP_FUNCTIONS and not raw_only:
                    sel = arg.selector
                    ok = arg.range_ms % BUCKET_MS == 0 and self.aligned(sel.offset_ms, sel.at)
                    self.add(sel.matchers, ROLLUP_FUNCTIONS[node.func] if ok else None)
                else:
                    self.walk(arg, raw_only)


def rollup_selectors(expr: ast.Expr, start_ms: int, end_ms: int, step_ms: int) -> dict[SelectorKey, bool]:
    """The selectors every use of which a 1-minute rollup answers exactly, each with whether it
    reads counter resets."""
    uses = _Uses(start_ms, end_ms, step_ms)
    uses.walk(expr)
    return {key: counter for key, counter in uses.by_key.items() if counter is not None}


async def read_rollups(
    conn: asyncpg.Connection, ids: list[int], lo_ms: int, hi_ms: int, counter: bool, max_rows: int
) -> tuple[dict[int, tuple[Ints, Floats, Ints]], int]:
    """Per series id that its buckets answer exactly: (ts ms, values, weights) of the first and
    last sample of each bucket between ``lo_ms`` and ``hi_ms``; and the number of samples kept.
    The ids missing from the answer must be read raw; more than ``max_rows`` buckets is
    RESOURCE_EXHAUSTED (``max_points``)."""
    lo_ns, hi_ns = lo_ms * NS_PER_MS, hi_ms * NS_PER_MS + NS_PER_MS - 1
    pending = {int(r["series_id"]) for r in await conn.fetch(PENDING_SQL, ids, lo_ns, hi_ns + BUCKET_MS * NS_PER_MS)}
    collector = CopyRows(ROW, max_rows)
    await conn.copy_from_query(BUCKETS_SQL, ids, lo_ns, hi_ns, counter, output=collector, format="binary")
    rows = collector.rows()
    sid = rows["sid"].astype(np.int64)
    # first and last of each bucket, interleaved in time order; a one-sample bucket keeps one
    ts, values, weights = np.empty(2 * len(rows), np.int64), np.empty(2 * len(rows)), np.ones(2 * len(rows), np.int64)
    ts[0::2], ts[1::2] = rows["first_ts"], rows["last_ts"]
    values[0::2], values[1::2] = rows["first"], rows["last"]
    weights[1::2] = rows["count"]
    weights[1::2] -= 1
    ts //= NS_PER_MS
    owner = np.repeat(sid, 2)
    keep = (weights > 0) & (ts >= lo_ms) & (ts <= hi_ms)
    bad = set(np.unique(sid[rows["ok"] == 0]).tolist()) | pending
    ts, values, weights, owner = ts[keep], values[keep], weights[keep], owner[keep]
    out: dict[int, tuple[Ints, Floats, Ints]] = {}
    kept = 0
    for one in ids:
        if one in bad:
            continue
        first, last = np.searchsorted(owner, one, "left"), np.searchsorted(owner, one, "right")
        out[one] = (ts[first:last], values[first:last], weights[first:last])
        kept += int(last - first)
    return out, kept
