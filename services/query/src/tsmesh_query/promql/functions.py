"""Prometheus's float functions. Range functions see each step's window of samples; instant
functions work on whole step arrays."""

from __future__ import annotations

import calendar
import datetime as dt
import math
import re
from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import re2

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.promql import ast
from tsmesh_query.promql.aggregate import quantile
from tsmesh_query.promql.values import (
    NAME,
    ExecutionError,
    Floats,
    Frame,
    Ints,
    Labels,
    RangeFrame,
    Scalar,
    Series,
    Text,
    Value,
    drop_name,
    make_labels,
    merge,
)
from tsmesh_query.promql.windows import windows_of_all

if TYPE_CHECKING:
    from tsmesh_query.promql.evaluate import Evaluator

Window = Callable[[Ints, Floats, int, int], float | None]  # (ts, values, te, range_ms) -> value or nothing


def _extrapolated(is_counter: bool, is_rate: bool) -> Window:
    def fn(ts: Ints, vals: Floats, te: int, range_ms: int) -> float | None:
        if len(vals) < 2:
            return None
        result = float(vals[-1] - vals[0])
        if is_counter:
            drops = vals[1:] < vals[:-1]
            result += float(vals[:-1][drops].sum())
        start, end = te - range_ms, te
        to_start = (ts[0] - start) / 1000
        to_end = (end - ts[-1]) / 1000
        sampled = (ts[-1] - ts[0]) / 1000
        average = sampled / (len(vals) - 1)
        if is_counter and result > 0 and vals[0] >= 0:
            to_zero = sampled * (vals[0] / result)
            to_start = min(to_start, to_zero)
        threshold = average * 1.1
        interval = sampled
        interval += to_start if to_start < threshold else average / 2
        interval += to_end if to_end < threshold else average / 2
        result = result * (interval / sampled)
        if is_rate:
            result /= range_ms / 1000
        return float(result)

    return fn


def _instant_delta(is_rate: bool) -> Window:
    def fn(ts: Ints, vals: Floats, te: int, range_ms: int) -> float | None:
        if len(vals) < 2:
            return None
        last, prev = float(vals[-1]), float(vals[-2])
        result = last if (is_rate and last < prev) else last - prev
        interval = (ts[-1] - ts[-2]) / 1000
        if interval == 0:
            return None
        return result / interval if is_rate else result

    return fn


def _regression(ts: Ints, vals: Floats, intercept_ms: int) -> tuple[float, float]:
    if (vals == vals[0]).all():
        if math.isinf(vals[0]):
            return math.nan, math.nan
        return 0.0, float(vals[0])
    x = (ts - intercept_ms) / 1000
    n = len(vals)
    sx, sy, sxy, sx2 = x.sum(), vals.sum(), (x * vals).sum(), (x * x).sum()
    with np.errstate(all="ignore"):
        slope = (sxy - sx * sy / n) / (sx2 - sx * sx / n)
        return float(slope), float(sy / n - slope * sx / n)


def _deriv(ts: Ints, vals: Floats, te: int, range_ms: int) -> float | None:
    return None if len(vals) < 2 else _regression(ts, vals, int(ts[0]))[0]


def _stdvar(vals: Floats) -> float:
    return float(np.mean((vals - vals.mean()) ** 2))


def _simple(fn: Callable[[Floats], float]) -> Window:
    def window(ts: Ints, vals: Floats, te: int, range_ms: int) -> float | None:
        if len(vals) == 0:
            return None
        with np.errstate(all="ignore"):
            return fn(vals)

    return window


def _fmin(v: Floats) -> float:
    return float(np.nan if np.isnan(v).all() else np.nanmin(v))


def _fmax(v: Floats) -> float:
    return float(np.nan if np.isnan(v).all() else np.nanmax(v))


RANGE_FUNCTIONS: dict[str, Window] = {
    "rate": _extrapolated(True, True),
    "increase": _extrapolated(True, False),
    "delta": _extrapolated(False, False),
    "irate": _instant_delta(True),
    "idelta": _instant_delta(False),
    "deriv": _deriv,
    "avg_over_time": _simple(lambda v: float(v.mean())),
    "sum_over_time": _simple(lambda v: float(v.sum())),
    "count_over_time": _simple(lambda v: float(len(v))),
    "min_over_time": _simple(_fmin),
    "max_over_time": _simple(_fmax),
    "last_over_time": _simple(lambda v: float(v[-1])),
    "present_over_time": _simple(lambda v: 1.0),
    "stdvar_over_time": _simple(_stdvar),
    "stddev_over_time": _simple(lambda v: math.sqrt(_stdvar(v))),
    "changes": _simple(lambda v: float(np.sum((v[1:] != v[:-1]) & ~(np.isnan(v[1:]) & np.isnan(v[:-1]))))),
    "resets": _simple(lambda v: float(np.sum(v[1:] < v[:-1]))),
}


def _math(fn: Callable[[Floats], Floats]) -> Callable[[Floats], Floats]:
    return fn


def _round_half_up(v: Floats) -> Floats:
    return np.floor(v + 0.5)


INSTANT_MATH: dict[str, Callable[[Floats], Floats]] = {
    "abs": np.abs,
    "ceil": np.ceil,
    "floor": np.floor,
    "exp": np.exp,
    "sqrt": np.sqrt,
    "ln": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "sgn": np.sign,
    "acos": np.arccos,
    "acosh": np.arccosh,
    "asin": np.arcsin,
    "asinh": np.arcsinh,
    "atan": np.arctan,
    "atanh": np.arctanh,
    "cos": np.cos,
    "cosh": np.cosh,
    "sin": np.sin,
    "sinh": np.sinh,
    "tan": np.tan,
    "tanh": np.tanh,
    "deg": np.degrees,
    "rad": np.radians,
}


def _date_part(name: str, seconds: float) -> float:
    if math.isnan(seconds) or math.isinf(seconds):
        return math.nan
    t = dt.datetime.fromtimestamp(0, tz=dt.UTC) + dt.timedelta(seconds=int(seconds))
    if name == "minute":
        return t.minute
    if name == "hour":
        return t.hour
    if name == "day_of_month":
        return t.day
    if name == "day_of_week":
        return (t.weekday() + 1) % 7
    if name == "day_of_year":
        return t.timetuple().tm_yday
    if name == "days_in_month":
        return calendar.monthrange(t.year, t.month)[1]
    if name == "month":
        return t.month
    return t.year


DATE_FUNCTIONS = frozenset(
    {"minute", "hour", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "month", "year"}
)


def call(node: ast.Call, args: list[Value], ts: Ints, ev: Evaluator) -> Value:
    name = node.func
    steps = len(ts)
    if name in RANGE_FUNCTIONS:
        rf = args[0]
        assert isinstance(rf, RangeFrame)
        return _over_range(name, rf, RANGE_FUNCTIONS[name], keep_name=name == "last_over_time")
    if name == "quantile_over_time":
        q, rf = args
        assert isinstance(q, Scalar) and isinstance(rf, RangeFrame)
        return _over_range_q(rf, q.values)
    if name == "predict_linear":
        rf, t = args
        assert isinstance(rf, RangeFrame) and isinstance(t, Scalar)
        return _predict_linear(rf, t.values, ts)
    if name == "holt_winters":
        rf, sf, tf = args
        assert isinstance(rf, RangeFrame) and isinstance(sf, Scalar) and isinstance(tf, Scalar)
        return _holt_winters(rf, float(sf.values[0]), float(tf.values[0]))
    if name == "absent_over_time":
        rf = args[0]
        assert isinstance(rf, RangeFrame)
        present = np.zeros(steps, dtype=np.bool_)
        for s in rf.series:
            present |= s.hi > s.lo
        return _absent(node.args[0], present, steps)
    if name == "absent":
        frame = args[0]
        assert isinstance(frame, Frame)
        present = np.zeros(steps, dtype=np.bool_)
        for one in frame.series:
            present |= one.present
        return _absent(node.args[0], present, steps)
    if name in INSTANT_MATH:
        frame = args[0]
        assert isinstance(frame, Frame)
        with np.errstate(all="ignore"):
            return Frame([Series(drop_name(s.labels), INSTANT_MATH[name](s.values), s.present) for s in frame.series])
    if name == "round":
        frame = args[0]
        assert isinstance(frame, Frame)
        to = args[1].values if len(args) > 1 and isinstance(args[1], Scalar) else np.ones(steps)
        with np.errstate(all="ignore"):
            inv = 1.0 / to
            return Frame(
                [Series(drop_name(s.labels), np.floor(s.values * inv + 0.5) / inv, s.present) for s in frame.series]
            )
    if name in ("clamp", "clamp_min", "clamp_max"):
        return _clamp(name, args)
    if name in DATE_FUNCTIONS:
        if not args:
            seconds = ts / 1000
            return Frame([Series((), np.array([_date_part(name, s) for s in seconds]), np.ones(steps, np.bool_))])
        frame = args[0]
        assert isinstance(frame, Frame)
        return Frame(
            [
                Series(drop_name(s.labels), np.array([_date_part(name, float(v)) for v in s.values]), s.present)
                for s in frame.series
            ]
        )
    if name == "time":
        return Scalar(ts / 1000)
    if name == "pi":
        return Scalar(np.full(steps, math.pi))
    if name == "vector":
        scalar = args[0]
        assert isinstance(scalar, Scalar)
        return Frame([Series((), scalar.values, np.ones(steps, dtype=np.bool_))])
    if name == "scalar":
        frame = args[0]
        assert isinstance(frame, Frame)
        count = np.zeros(steps)
        value = np.full(steps, np.nan)
        for one in frame.series:
            count += one.present
            value = np.where(one.present, one.values, value)
        return Scalar(np.where(count == 1, value, np.nan))
    if name == "timestamp":
        frame = args[0]
        assert isinstance(frame, Frame)
        stamped = []
        direct = isinstance(node.args[0], ast.VectorSelector)  # else the samples stand at the steps
        for one in frame.series:
            when = (one.sample_ts if direct and one.sample_ts is not None else ts) / 1000
            stamped.append(Series(drop_name(one.labels), when.astype(np.float64), one.present))
        return merge(stamped)
    if name in ("sort", "sort_desc"):
        return args[0]
    if name == "label_replace":
        return _label_replace(args)
    if name == "label_join":
        return _label_join(args)
    if name == "histogram_quantile":
        q, frame = args
        assert isinstance(q, Scalar) and isinstance(frame, Frame)
        return _histogram_quantile(q.values, frame, steps)
    raise InvalidArgument("query", f"unknown function with name {name!r}")


def _over_range(name: str, rf: RangeFrame, fn: Window, keep_name: bool) -> Frame:
    out = []
    steps = len(rf.te)
    for s, whole in zip(rf.series, windows_of_all(name, rf.series, rf.te, rf.range_ms), strict=True):
        labels = s.labels if keep_name else drop_name(s.labels)
        assert whole is not None or s.weights is None, "rollup samples reached a per-window function"
        if whole is not None:
            out.append(Series(labels, whole[0], whole[1]))
            continue
        values = np.zeros(steps)
        present = np.zeros(steps, dtype=np.bool_)
        for i in range(steps):
            lo, hi = int(s.lo[i]), int(s.hi[i])
            if hi <= lo:
                continue
            v = fn(s.ts[lo:hi], s.values[lo:hi], int(rf.te[i]), rf.range_ms)
            if v is not None:
                values[i], present[i] = v, True
        out.append(Series(labels, values, present))
    return merge(out)


def _over_range_q(rf: RangeFrame, qs: Floats) -> Frame:
    out = []
    steps = len(rf.te)
    for s in rf.series:
        values = np.zeros(steps)
        present = s.hi > s.lo
        for i in np.flatnonzero(present):
            values[i] = quantile(float(qs[i]), [float(v) for v in s.values[s.lo[i] : s.hi[i]]])
        out.append(Series(drop_name(s.labels), values, present))
    return merge(out)


def _predict_linear(rf: RangeFrame, seconds: Floats, ts: Ints) -> Frame:
    out = []
    steps = len(rf.te)
    for s in rf.series:
        values = np.zeros(steps)
        present = (s.hi - s.lo) >= 2
        for i in np.flatnonzero(present):
            slope, intercept = _regression(s.ts[s.lo[i] : s.hi[i]], s.values[s.lo[i] : s.hi[i]], int(ts[i]))
            values[i] = slope * seconds[i] + intercept
        out.append(Series(drop_name(s.labels), values, present))
    return merge(out)


def _holt_winters(rf: RangeFrame, sf: float, tf: float) -> Frame:
    if not 0 < sf < 1:
        raise ExecutionError(f"invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}")
    if not 0 < tf < 1:
        raise ExecutionError(f"invalid trend factor. Expected: 0 < tf < 1, got: {tf}")
    out = []
    steps = len(rf.te)
    for s in rf.series:
        values = np.zeros(steps)
        present = (s.hi - s.lo) >= 2
        for i in np.flatnonzero(present):
            v = s.values[s.lo[i] : s.hi[i]]
            s0, s1, b = 0.0, float(v[0]), float(v[1] - v[0])
            for j in range(1, len(v)):
                if j > 1:
                    b = tf * (s1 - s0) + (1 - tf) * b
                s0, s1 = s1, sf * float(v[j]) + (1 - sf) * (s1 + b)
            values[i] = s1
        out.append(Series(drop_name(s.labels), values, present))
    return merge(out)


def _absent(arg: ast.Expr, present: np.ndarray, steps: int) -> Frame:
    selector = arg.selector if isinstance(arg, ast.MatrixSelector) else arg
    labels: dict[str, str] = {}
    if isinstance(selector, ast.VectorSelector):
        seen: set[str] = set()
        for name, op, value in selector.matchers:
            if name == NAME:
                continue
            if op == "=" and name not in seen:
                labels[name] = value
            elif name in labels:
                del labels[name]
            seen.add(name)
    return Frame([Series(make_labels(labels), np.ones(steps), ~present)])


def _clamp(name: str, args: list[Value]) -> Frame:
    frame = args[0]
    assert isinstance(frame, Frame)
    out = []
    for s in frame.series:
        values, present = s.values, s.present
        with np.errstate(all="ignore"):
            if name == "clamp":
                lo, hi = args[1], args[2]
                assert isinstance(lo, Scalar) and isinstance(hi, Scalar)
                present = present & ~(hi.values < lo.values)
                values = np.fmax(lo.values, np.fmin(hi.values, values))
                values = np.where(np.isnan(s.values), np.nan, values)
            else:
                bound = args[1]
                assert isinstance(bound, Scalar)
                pick = np.fmax if name == "clamp_min" else np.fmin
                values = np.where(np.isnan(s.values), np.nan, pick(bound.values, values))
        out.append(Series(drop_name(s.labels), values, present))
    return Frame(out)


def _expand(template: str, match: Any, groups: dict[str, int]) -> str:
    """Go's ``Regexp.ExpandString``: ``$1``, ``$name``, ``${name}``, ``$$``."""
    out, i = [], 0
    while i < len(template):
        c = template[i]
        if c != "$" or i + 1 >= len(template):
            out.append(c)
            i += 1
            continue
        nxt = template[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = template.find("}", i + 2)
            if end < 0:
                out.append(c)
                i += 1
                continue
            ref, i = template[i + 2 : end], end + 1
        else:
            j = i + 1
            while j < len(template) and (template[j].isalnum() or template[j] == "_"):
                j += 1
            if j == i + 1:
                out.append(c)
                i += 1
                continue
            ref, i = template[i + 1 : j], j
        index = int(ref) if ref.isdigit() else groups.get(ref, -1)
        if 0 <= index <= match.re.groups:
            out.append(match.group(index) or "")
    return "".join(out)


REGEX_MAX_MEM = 1 << 20
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _check_label_name(name: str, role: str, function: str) -> None:
    if not _LABEL_NAME.fullmatch(name):
        raise ExecutionError(f"invalid {role} label name in {function}(): {name}")


def _label_replace(args: list[Value]) -> Frame:
    frame, dst, repl, src, regex = args
    assert isinstance(frame, Frame)
    assert isinstance(dst, Text) and isinstance(repl, Text) and isinstance(src, Text) and isinstance(regex, Text)
    options = re2.Options()
    options.log_errors = False
    options.max_mem = REGEX_MAX_MEM
    try:
        compiled = re2.compile(f"^(?:{regex.value})$", options)
    except re2.error:
        raise ExecutionError(f"invalid regular expression in label_replace(): {regex.value}") from None
    _check_label_name(dst.value, "destination", "label_replace")
    out = []
    for s in frame.series:
        labels = dict(s.labels)
        match = compiled.search(labels.get(src.value, ""))
        if match is not None:
            labels[dst.value] = _expand(repl.value, match, dict(compiled.groupindex))
        out.append(Series(make_labels(labels), s.values, s.present, s.sample_ts))
    return merge(out)


def _label_join(args: list[Value]) -> Frame:
    frame, dst, sep, *srcs = args
    assert isinstance(frame, Frame) and isinstance(dst, Text) and isinstance(sep, Text)
    _check_label_name(dst.value, "destination", "label_join")
    for src in srcs:
        assert isinstance(src, Text)
        _check_label_name(src.value, "source", "label_join")
    out = []
    for s in frame.series:
        labels = dict(s.labels)
        labels[dst.value] = sep.value.join(labels.get(x.value, "") for x in srcs if isinstance(x, Text))
        out.append(Series(make_labels(labels), s.values, s.present, s.sample_ts))
    return merge(out)


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    buckets.sort(key=lambda b: b[0])
    if not math.isinf(buckets[-1][0]):
        return math.nan
    merged: list[list[float]] = []
    for bound, count in buckets:
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    top = -math.inf
    for b in merged:
        if b[1] > top:
            top = b[1]
        elif b[1] < top:
            b[1] = top
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    at = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if at == len(merged) - 1:
        return merged[-2][0]
    if at == 0 and merged[0][0] <= 0:
        return merged[0][0]
    start, end, count = 0.0, merged[at][0], merged[at][1]
    if at > 0:
        start = merged[at - 1][0]
        count -= merged[at - 1][1]
        rank -= merged[at - 1][1]
    return float(start + (end - start) * (rank / count))


def _histogram_quantile(qs: Floats, frame: Frame, steps: int) -> Frame:
    groups: dict[Labels, list[tuple[float, Series]]] = defaultdict(list)
    for one in frame.series:
        names = dict(one.labels)
        le = names.pop("le", None)
        if le is None:
            continue
        try:
            bound = float(le)
        except ValueError:
            continue
        names.pop(NAME, None)
        groups[make_labels(names)].append((bound, one))
    out = []
    for labels, members in groups.items():
        values = np.zeros(steps)
        present = np.zeros(steps, dtype=np.bool_)
        for i in range(steps):
            buckets = [(bound, float(s.values[i])) for bound, s in members if s.present[i]]
            if buckets:
                values[i], present[i] = _bucket_quantile(float(qs[i]), buckets), True
        out.append(Series(labels, values, present))
    return merge(out)
