"""Stage 6: the evaluator's value as Prometheus's result (``resultType`` and ``result``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tsmesh_query.promql import ast
from tsmesh_query.promql.values import Frame, Ints, Labels, RangeFrame, Scalar, Text, Value


@dataclass(frozen=True)
class ResultSeries:
    labels: Labels
    ts: list[int]  # ms
    values: list[float]


@dataclass(frozen=True)
class Result:
    """``result_type`` is "matrix", "vector", "scalar" or "string"; scalars and strings carry one point."""

    result_type: str
    series: list[ResultSeries]
    text: str = ""


def _sort_key(descending: bool) -> Callable[[ResultSeries], tuple[bool, float]]:
    def key(s: ResultSeries) -> tuple[bool, float]:
        v = s.values[0]
        return (math.isnan(v), -v if descending else v)

    return key


def encode(value: Value, timestamps: Ints, instant: bool, expr: ast.Expr | None = None) -> Result:
    """Range results come sorted by labels; an instant vector too, unless ``expr`` is ``sort`` or
    ``sort_desc``, whose order by value (NaN last) is kept, as Prometheus does."""
    if isinstance(value, RangeFrame):  # an instant query of a range selector or subquery: its samples
        windows = [
            ResultSeries(s.labels, s.ts[s.lo[0] : s.hi[0]].tolist(), s.values[s.lo[0] : s.hi[0]].tolist())
            for s in value.series
        ]
        return Result("matrix", sorted((w for w in windows if w.ts), key=lambda w: w.labels))
    if isinstance(value, Text):
        return Result("string", [], value.value)
    if isinstance(value, Scalar):
        if instant:
            return Result("scalar", [ResultSeries((), [int(timestamps[0])], [float(value.values[0])])])
        return Result("matrix", [ResultSeries((), timestamps.tolist(), value.values.tolist())])
    assert isinstance(value, Frame)
    out = []
    for s in value.series:
        where = np.flatnonzero(s.present)
        if len(where):
            out.append(ResultSeries(s.labels, timestamps[where].tolist(), s.values[where].tolist()))
    out.sort(key=lambda s: s.labels)
    if instant and isinstance(expr, ast.Call) and expr.func in ("sort", "sort_desc"):
        out.sort(key=_sort_key(expr.func == "sort_desc"))
    return Result("vector" if instant else "matrix", out)
