"""Stage 6: the evaluator's value as Prometheus's result (``resultType`` and ``result``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def encode(value: Value, timestamps: Ints, instant: bool) -> Result:
    if isinstance(value, RangeFrame):
        raise ValueError("a range vector is not a query result")  # the parser rejects this shape
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
    return Result("vector" if instant else "matrix", out)
