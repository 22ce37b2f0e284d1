"""Stage 5: evaluate the syntax tree over all steps at once with numpy, with Prometheus's semantics.

Each node evaluates at an array of step timestamps (ms) and yields a ``Frame`` (instant vector),
``Scalar``, ``Text`` or ``RangeFrame``; operators, aggregations and functions live in their own
modules. A deadline is checked between nodes.
"""

from __future__ import annotations

import time

import numpy as np

from tsmesh_common.errors import DeadlineExceeded, ResourceExhausted
from tsmesh_query.promql import ast
from tsmesh_query.promql.aggregate import aggregate
from tsmesh_query.promql.binary import binary
from tsmesh_query.promql.functions import call
from tsmesh_query.promql.plan import DEFAULT_SUBQUERY_STEP_MS, LOOKBACK_MS, Plan, at_ms
from tsmesh_query.promql.values import (
    Frame,
    Ints,
    RangeFrame,
    RangeSeries,
    SampleSet,
    Scalar,
    Series,
    Text,
    Value,
    drop_name,
)


class Evaluator:
    """Evaluates one plan over its samples."""

    def __init__(self, plan: Plan, samples: SampleSet, deadline: float, max_values: int = 10_000_000) -> None:
        """``max_values``: how many step values (series x steps) a subquery may make its inner
        expression hold."""
        self._plan = plan
        self._samples = samples
        self._deadline = deadline
        self._max_values = max_values
        self._series = max(1, sum(len(v) for v in samples.by_selector.values()))

    def run(self) -> Value:
        return self.eval(self._plan.expr, self._plan.timestamps)

    def eval(self, node: ast.Expr, ts: Ints) -> Value:
        if time.monotonic() > self._deadline:
            raise DeadlineExceeded("query timed out in expression evaluation")
        if isinstance(node, ast.Number):
            return Scalar(np.full(len(ts), node.value, dtype=np.float64))
        if isinstance(node, ast.String):
            return Text(node.value)
        if isinstance(node, ast.VectorSelector):
            return self._instant(node, ts)
        if isinstance(node, ast.MatrixSelector):
            return self._range(node, ts)
        if isinstance(node, ast.Subquery):
            return self._subquery(node, ts)
        if isinstance(node, ast.Unary):
            inner = self.eval(node.expr, ts)
            if isinstance(inner, Scalar):
                return Scalar(-inner.values)
            assert isinstance(inner, Frame)
            return Frame([Series(drop_name(s.labels), -s.values, s.present) for s in inner.series])
        if isinstance(node, ast.Binary):
            return binary(node, self.eval(node.lhs, ts), self.eval(node.rhs, ts), len(ts))
        if isinstance(node, ast.Aggregate):
            param = None if node.param is None else self.eval(node.param, ts)
            inner = self.eval(node.expr, ts)
            assert isinstance(inner, Frame)
            return aggregate(node, inner, param, len(ts))
        return call(node, [self.eval(a, ts) for a in node.args], ts, self)

    def _times(self, ts: Ints, offset_ms: int, at: ast.At | None) -> Ints:
        if at is not None:
            return np.full(len(ts), at_ms(at, self._plan.start_ms, self._plan.end_ms) - offset_ms, dtype=np.int64)
        return ts - offset_ms

    def _instant(self, node: ast.VectorSelector, ts: Ints) -> Frame:
        te = self._times(ts, node.offset_ms, node.at)
        out: list[Series] = []
        for raw in self._samples.by_selector.get(node.matchers, []):
            idx = np.searchsorted(raw.ts, te, "right") - 1
            ok = idx >= 0
            safe = np.where(ok, idx, 0)
            if len(raw.ts) == 0:
                continue
            sample_ts = raw.ts[safe]
            present = ok & (sample_ts >= te - LOOKBACK_MS)
            out.append(Series(raw.labels, np.where(present, raw.values[safe], 0.0), present, sample_ts))
        return Frame(out)

    def _range(self, node: ast.MatrixSelector, ts: Ints) -> RangeFrame:
        sel = node.selector
        te = self._times(ts, sel.offset_ms, sel.at)
        out = []
        for raw in self._samples.by_selector.get(sel.matchers, []):
            lo = np.searchsorted(raw.ts, te - node.range_ms, "left").astype(np.int64)
            hi = np.searchsorted(raw.ts, te, "right").astype(np.int64)
            out.append(RangeSeries(raw.labels, raw.ts, raw.values, lo, hi, raw.weights))
        return RangeFrame(out, te, node.range_ms)

    def _subquery(self, node: ast.Subquery, ts: Ints) -> RangeFrame:
        te = self._times(ts, node.offset_ms, node.at)
        step = node.step_ms or DEFAULT_SUBQUERY_STEP_MS
        first = -((-(te - node.range_ms)) // step) * step  # first multiple of step >= te - range
        pieces = [np.arange(f, t + 1, step, dtype=np.int64) for f, t in zip(first, te, strict=True)]
        inner_ts = np.unique(np.concatenate(pieces)) if pieces else np.zeros(0, dtype=np.int64)
        if len(inner_ts) * self._series > self._max_values:
            raise ResourceExhausted(
                "max_points", f"a subquery of {len(inner_ts)} steps over {self._series} series holds too many values"
            )
        inner = self.eval(node.expr, inner_ts)
        if isinstance(inner, Scalar):
            inner = Frame([Series((), inner.values, np.ones(len(inner_ts), dtype=np.bool_))])
        assert isinstance(inner, Frame)
        out = []
        for s in inner.series:
            sts, svals = inner_ts[s.present], s.values[s.present]
            lo = np.searchsorted(sts, te - node.range_ms, "left").astype(np.int64)
            hi = np.searchsorted(sts, te, "right").astype(np.int64)
            out.append(RangeSeries(s.labels, sts, svals, lo, hi))
        return RangeFrame(out, te, node.range_ms)
