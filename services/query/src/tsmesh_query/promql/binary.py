"""Binary operators: arithmetic, comparisons (with ``bool``) and set operators, with vector matching
(``on``/``ignoring``, ``group_left``/``group_right``), evaluated per step through presence masks."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tsmesh_query.promql import ast
from tsmesh_query.promql.values import (
    NAME,
    ExecutionError,
    Floats,
    Frame,
    Labels,
    Mask,
    Scalar,
    Series,
    Value,
    drop_name,
    merge,
)

ARITHMETIC = frozenset({"+", "-", "*", "/", "%", "^", "atan2"})
# Prometheus 2.x keeps the metric name through atan2 (only + - * / % ^ drop it)
DROPS_NAME = frozenset({"+", "-", "*", "/", "%", "^"})
COMPARISON = frozenset({"==", "!=", ">", "<", ">=", "<="})


def arith(op: str, a: Floats, b: Floats) -> Floats:
    with np.errstate(all="ignore"):
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            return a / b
        if op == "%":
            return np.fmod(a, b)
        if op == "^":
            return np.power(a, b)
        if op == "atan2":
            return np.arctan2(a, b)
    raise ExecutionError(f"operator {op!r} not allowed here")


def compare(op: str, a: Floats, b: Floats) -> Mask:
    with np.errstate(all="ignore"):
        result: Mask
        if op == "==":
            result = np.equal(a, b)
        elif op == "!=":
            result = np.not_equal(a, b)
        elif op == ">":
            result = np.greater(a, b)
        elif op == "<":
            result = np.less(a, b)
        elif op == ">=":
            result = np.greater_equal(a, b)
        else:
            result = np.less_equal(a, b)
        return result


def binary(node: ast.Binary, lhs: Value, rhs: Value, steps: int) -> Value:
    op = node.op
    if isinstance(lhs, Scalar) and isinstance(rhs, Scalar):
        if op in COMPARISON:
            return Scalar(compare(op, lhs.values, rhs.values).astype(np.float64))
        return Scalar(arith(op, lhs.values, rhs.values))
    if isinstance(lhs, Frame) and isinstance(rhs, Scalar):
        return _vector_scalar(op, lhs, rhs.values, False, node.return_bool)
    if isinstance(lhs, Scalar) and isinstance(rhs, Frame):
        return _vector_scalar(op, rhs, lhs.values, True, node.return_bool)
    assert isinstance(lhs, Frame) and isinstance(rhs, Frame)
    if op in ("and", "or", "unless"):
        return _set_op(op, lhs, rhs, node.matching, steps)
    return _vector_vector(node, lhs, rhs, steps)


def _vector_scalar(op: str, vec: Frame, scalar: Floats, swap: bool, return_bool: bool) -> Frame:
    out = []
    for s in vec.series:
        lv, rv = (scalar, s.values) if swap else (s.values, scalar)
        if op in COMPARISON:
            keep = compare(op, lv, rv)
            value = s.values
        else:
            keep = np.ones_like(s.present)
            value = arith(op, lv, rv)
        if return_bool:
            value, keep = keep.astype(np.float64), np.ones_like(keep)
        labels = drop_name(s.labels) if (op in DROPS_NAME or return_bool) else s.labels
        out.append(Series(labels, value, s.present & keep))
    return Frame(out)


def signature(labels: Labels, matching: ast.Matching) -> Labels:
    if matching.on:
        keep = set(matching.labels)
        return tuple(p for p in labels if p[0] in keep)
    drop = {*matching.labels, NAME}
    return tuple(p for p in labels if p[0] not in drop)


def _any_by_sig(frame: Frame, matching: ast.Matching) -> dict[Labels, Mask]:
    present: dict[Labels, Mask] = {}
    for s in frame.series:
        sig = signature(s.labels, matching)
        seen = present.get(sig)
        present[sig] = s.present.copy() if seen is None else (seen | s.present)
    return present


def _set_op(op: str, lhs: Frame, rhs: Frame, matching: ast.Matching, steps: int) -> Frame:
    none = np.zeros(steps, dtype=np.bool_)
    if op == "or":
        left = _any_by_sig(lhs, matching)
        extra = [
            Series(s.labels, s.values, s.present & ~left.get(signature(s.labels, matching), none), s.sample_ts)
            for s in rhs.series
        ]
        return merge([*lhs.series, *extra])
    right = _any_by_sig(rhs, matching)
    out = []
    for s in lhs.series:
        hit = right.get(signature(s.labels, matching), none)
        out.append(Series(s.labels, s.values, s.present & (hit if op == "and" else ~hit), s.sample_ts))
    return Frame(out)


def _result_labels(many: Labels, one: Labels, op: str, matching: ast.Matching) -> Labels:
    labels = dict(many)
    if op in DROPS_NAME:
        labels.pop(NAME, None)
    if matching.card == "one-to-one":
        if matching.on:
            labels = {k: v for k, v in labels.items() if k in matching.labels}
        else:
            for name in matching.labels:
                labels.pop(name, None)
    one_side = dict(one)
    for name in matching.include:
        value = one_side.get(name, "")
        if value:
            labels[name] = value
        else:
            labels.pop(name, None)
    return tuple(sorted(labels.items()))


def _vector_vector(node: ast.Binary, lhs: Frame, rhs: Frame, steps: int) -> Frame:
    op, matching = node.op, node.matching
    swapped = matching.card == "one-to-many"
    many, one = (rhs, lhs) if swapped else (lhs, rhs)
    many_any = np.zeros(steps, dtype=np.bool_)
    for s in many.series:
        many_any |= s.present
    one_any = np.zeros(steps, dtype=np.bool_)
    for s in one.series:
        one_any |= s.present
    active = many_any & one_any  # Prometheus short-circuits steps where a side is empty
    groups: dict[Labels, list[Series]] = defaultdict(list)
    for s in one.series:
        groups[signature(s.labels, matching)].append(s)
    one_side: dict[Labels, tuple[Floats, Mask, list[Series]]] = {}
    for sig, members in groups.items():
        count = np.sum([m.present for m in members], axis=0)
        if ((count > 1) & active).any():
            side = "left" if swapped else "right"
            raise ExecutionError(
                f"found duplicate series for the match group {dict(sig)} on the {side} hand-side of the "
                "operation; many-to-many matching not allowed: matching labels must be unique on one side"
            )
        values = np.zeros(steps, dtype=np.float64)
        for m in members:
            values = np.where(m.present, m.values, values)
        one_side[sig] = (values, count > 0, members)
    out: list[Series] = []
    matched: dict[Labels, Mask] = {}
    for s in many.series:
        sig = signature(s.labels, matching)
        entry = one_side.get(sig)
        if entry is None:
            continue
        ovals, opresent, members = entry
        both = s.present & opresent
        if not both.any():
            continue
        vl, vr = (ovals, s.values) if swapped else (s.values, ovals)
        if op in COMPARISON:
            keep = compare(op, vl, vr)
            value = vl
        else:
            keep = np.ones(steps, dtype=np.bool_)
            value = arith(op, vl, vr)
        if node.return_bool:
            value, keep = keep.astype(np.float64), np.ones(steps, dtype=np.bool_)
        for member in members:  # the one-side series present at these steps gives group_x labels
            where = both & member.present
            if not where.any():
                continue
            labels = _result_labels(s.labels, member.labels, op, matching)
            if node.return_bool:
                labels = drop_name(labels)
            key = sig if matching.card == "one-to-one" else (*sig, ("\x00", repr(labels)))
            seen = matched.get(key)
            hit = where & keep
            if seen is not None and (seen & where).any():
                if matching.card == "one-to-one":
                    raise ExecutionError(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                    )
                raise ExecutionError("multiple matches for labels: grouping labels must ensure unique results")
            matched[key] = where if seen is None else (seen | where)
            out.append(Series(labels, value, hit))
    return merge(out)
