"""Aggregation operators with ``by``/``without``, per step over presence masks."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.promql import ast
from tsmesh_query.promql.values import NAME, Floats, Frame, Labels, Mask, Scalar, Series, Text, Value, merge


def group_labels(labels: Labels, node: ast.Aggregate) -> Labels:
    if node.without:
        drop = {*node.labels, NAME}
        return tuple(p for p in labels if p[0] not in drop)
    keep = set(node.labels)
    return tuple(p for p in labels if p[0] in keep)


def format_value(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(np.format_float_positional(value, unique=True, trim="-"))


def quantile(q: float, values: list[float]) -> float:
    """Prometheus's ``quantile`` (NaN sorts first)."""
    if math.isnan(q):
        return math.nan
    if not values:
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    ordered = sorted(values, key=lambda v: (not math.isnan(v), v))
    rank = q * (len(ordered) - 1)
    lower = max(0, math.floor(rank))
    upper = min(len(ordered) - 1, lower + 1)
    weight = rank - math.floor(rank)
    return ordered[lower] * (1 - weight) + ordered[upper] * weight


def aggregate(node: ast.Aggregate, frame: Frame, param: Value | None, steps: int) -> Frame:
    op = node.op
    groups: dict[Labels, list[Series]] = defaultdict(list)
    for s in frame.series:
        groups[group_labels(s.labels, node)].append(s)
    if op in ("topk", "bottomk"):
        assert isinstance(param, Scalar)
        return _top(frame, groups, param.values, op == "topk", steps)
    if op == "count_values":
        assert isinstance(param, Text)
        return _count_values(groups, param.value, steps)
    out = []
    for labels, members in groups.items():
        present = np.array([m.present for m in members])
        values = np.array([m.values for m in members])
        any_present: Mask = np.asarray(present.any(axis=0), dtype=np.bool_)
        count = present.sum(axis=0).astype(np.float64)
        with np.errstate(all="ignore"):
            if op == "sum":
                result = np.where(present, values, 0.0).sum(axis=0)
            elif op == "count":
                result = count
            elif op == "group":
                result = np.ones(steps)
            elif op == "avg":
                result = np.where(present, values, 0.0).sum(axis=0) / count
            elif op in ("min", "max"):
                masked = np.where(present, values, np.nan)
                result = (np.fmin if op == "min" else np.fmax).reduce(masked, axis=0)
            elif op in ("stddev", "stdvar"):
                var = _welford_variance(values, present)
                result = np.sqrt(var) if op == "stddev" else var
            elif op == "quantile":
                assert isinstance(param, Scalar)
                result = np.array(
                    [
                        quantile(float(param.values[i]), [float(v) for v in values[present[:, i], i]])
                        for i in range(steps)
                    ]
                )
            else:
                raise InvalidArgument("query", f"unknown aggregation {op!r}")
        out.append(Series(labels, result.astype(np.float64), any_present))
    return merge(out)


def _welford_variance(values: Floats, present: Mask) -> Floats:
    """Population variance per step, accumulated member by member as Prometheus does (so a lone
    NaN member gives 0, as there)."""
    steps = values.shape[1]
    count = np.zeros(steps)
    mean = np.zeros(steps)
    total = np.zeros(steps)
    for v, p in zip(values, present, strict=True):
        first = p & (count == 0)
        later = p & (count > 0)
        count = count + p
        delta = v - mean
        new_mean = np.where(first, v, np.where(later, mean + delta / np.where(count > 0, count, 1), mean))
        total = np.where(later, total + delta * (v - new_mean), total)
        mean = new_mean
    return np.asarray(total / np.where(count > 0, count, 1), dtype=np.float64)


def _top(frame: Frame, groups: dict[Labels, list[Series]], ks: Floats, top: bool, steps: int) -> Frame:
    chosen = {id(s): np.zeros(steps, dtype=np.bool_) for s in frame.series}
    for members in groups.values():
        for i in range(steps):
            k = ks[i]
            if math.isnan(k) or k < 1:
                continue
            live = [m for m in members if m.present[i]]
            # NaN ranks last in both directions
            if top:
                live.sort(key=lambda m: (math.isnan(m.values[i]), -m.values[i] if not math.isnan(m.values[i]) else 0))
            else:
                live.sort(key=lambda m: (math.isnan(m.values[i]), m.values[i] if not math.isnan(m.values[i]) else 0))
            for m in live[: int(min(k, len(live)))]:
                chosen[id(m)][i] = True
    return Frame([Series(s.labels, s.values, chosen[id(s)]) for s in frame.series if chosen[id(s)].any()])


def _count_values(groups: dict[Labels, list[Series]], label: str, steps: int) -> Frame:
    counts: dict[Labels, np.ndarray] = {}
    for labels, members in groups.items():
        for m in members:
            for i in np.flatnonzero(m.present):
                key = tuple(sorted({**dict(labels), label: format_value(float(m.values[i]))}.items()))
                if key not in counts:
                    counts[key] = np.zeros(steps)
                counts[key][i] += 1
    return Frame([Series(k, v, v > 0) for k, v in counts.items()])
