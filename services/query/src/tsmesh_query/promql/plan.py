"""Stage 2: the evaluation steps and, per selector, the time span of samples the query needs."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.promql import ast
from tsmesh_query.promql.rollups import rollup_selectors
from tsmesh_query.promql.values import Ints

LOOKBACK_MS = 5 * 60_000
DEFAULT_SUBQUERY_STEP_MS = 60_000  # Prometheus's default global evaluation_interval
MAX_STEPS = 11_000  # Prometheus refuses more points per series than this

SelectorKey = tuple[tuple[str, str, str], ...]


@dataclass(frozen=True)
class Plan:
    """What to evaluate, at which steps (ms), and which samples (per selector, ``[lo, hi]`` ms) to
    fetch; ``rollups``: the selectors a 1-minute rollup answers exactly (``rollups.py``), each with
    whether it reads counter resets."""

    expr: ast.Expr
    start_ms: int
    end_ms: int
    step_ms: int
    timestamps: Ints
    spans: dict[SelectorKey, tuple[int, int]]
    rollups: dict[SelectorKey, bool] = field(default_factory=dict)


def at_ms(at: ast.At, start_ms: int, end_ms: int) -> int:
    if at.kind == "start":
        return start_ms
    if at.kind == "end":
        return end_ms
    return at.ms


def plan_query(
    expr: ast.Expr, start_ms: int, end_ms: int, step_ms: int, instant: bool = False, rollups: bool = True
) -> Plan:
    """Validate the time range and work out every selector's sample span. A range query must be
    of scalar or instant-vector type; an instant query may also answer a string or a range vector."""
    if not instant and isinstance(expr, ast.String | ast.MatrixSelector | ast.Subquery):
        kind = "string" if isinstance(expr, ast.String) else "range vector"
        raise InvalidArgument(
            "query", f'invalid expression type "{kind}" for range query, must be Scalar or instant Vector'
        )
    if end_ms < start_ms:
        raise InvalidArgument("end", "end timestamp must not be before start time")
    if step_ms <= 0:
        raise InvalidArgument("step", "zero or negative query resolution step widths are not accepted")
    if (end_ms - start_ms) // step_ms + 1 > MAX_STEPS:
        raise InvalidArgument("step", f"exceeded maximum resolution of {MAX_STEPS} points per timeseries")
    timestamps = np.arange(start_ms, end_ms + 1, step_ms, dtype=np.int64)
    spans: dict[SelectorKey, tuple[int, int]] = {}
    _walk(expr, start_ms, end_ms, start_ms, end_ms, spans)
    exact = rollup_selectors(expr, start_ms, end_ms, step_ms) if rollups else {}
    return Plan(expr, start_ms, end_ms, step_ms, timestamps, spans, exact)


def _shift(lo: int, hi: int, offset_ms: int, at: ast.At | None, start_ms: int, end_ms: int) -> tuple[int, int]:
    if at is not None:
        t = at_ms(at, start_ms, end_ms)
        return t - offset_ms, t - offset_ms
    return lo - offset_ms, hi - offset_ms


def _add(spans: dict[SelectorKey, tuple[int, int]], key: SelectorKey, lo: int, hi: int) -> None:
    seen = spans.get(key)
    spans[key] = (lo, hi) if seen is None else (min(seen[0], lo), max(seen[1], hi))


def _walk(
    node: ast.Expr, lo: int, hi: int, start_ms: int, end_ms: int, spans: dict[SelectorKey, tuple[int, int]]
) -> None:
    if isinstance(node, ast.VectorSelector):
        a, b = _shift(lo, hi, node.offset_ms, node.at, start_ms, end_ms)
        _add(spans, node.matchers, a - LOOKBACK_MS, b)
    elif isinstance(node, ast.MatrixSelector):
        sel = node.selector
        a, b = _shift(lo, hi, sel.offset_ms, sel.at, start_ms, end_ms)
        _add(spans, sel.matchers, a - node.range_ms, b)
    elif isinstance(node, ast.Subquery):
        a, b = _shift(lo, hi, node.offset_ms, node.at, start_ms, end_ms)
        _walk(node.expr, a - node.range_ms, b, start_ms, end_ms, spans)
    elif isinstance(node, ast.Unary):
        _walk(node.expr, lo, hi, start_ms, end_ms, spans)
    elif isinstance(node, ast.Binary):
        _walk(node.lhs, lo, hi, start_ms, end_ms, spans)
        _walk(node.rhs, lo, hi, start_ms, end_ms, spans)
    elif isinstance(node, ast.Aggregate):
        _walk(node.expr, lo, hi, start_ms, end_ms, spans)
        if node.param is not None:
            _walk(node.param, lo, hi, start_ms, end_ms, spans)
    elif isinstance(node, ast.Call):
        for arg in node.args:
            _walk(arg, lo, hi, start_ms, end_ms, spans)
