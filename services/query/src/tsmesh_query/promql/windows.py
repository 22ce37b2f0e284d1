"""Range functions computed for all steps of a series at once from prefix sums over its samples
(the per-window loop in ``functions`` is the reference; the corpus test holds both to Prometheus).

Prefix sums are used only on finite samples: a NaN or an infinity would spread into every later
window, so such series take the loop. Minima and maxima come from a sparse table (``fmin``/``fmax``
of power-of-two spans, NaN ignored unless alone, as Prometheus does).
"""

from __future__ import annotations

import numpy as np

from tsmesh_query.promql.values import Floats, Ints, Mask, RangeSeries

EXTREMES = frozenset({"min_over_time", "max_over_time"})
VECTORIZED = frozenset(
    {
        *EXTREMES,
        "rate",
        "increase",
        "delta",
        "sum_over_time",
        "count_over_time",
        "avg_over_time",
        "last_over_time",
        "present_over_time",
    }
)


def _prefix(values: Floats) -> Floats:
    return np.concatenate(([0.0], np.cumsum(values)))


def window_values(name: str, s: RangeSeries, te: Ints, range_ms: int) -> tuple[Floats, Mask] | None:
    """``name`` over each step's window of ``s``, or None when the loop must compute it."""
    if name in EXTREMES:
        return _extreme(np.fmin if name == "min_over_time" else np.fmax, s)
    if name not in VECTORIZED or not np.isfinite(s.values).all():
        return None
    lo, hi = s.lo, s.hi
    count = hi - lo
    present = count > 0
    if s.weights is not None:  # a rollup's samples: count the stored samples they stand for
        weight = np.concatenate(([0], np.cumsum(s.weights)))
        count = weight[hi] - weight[lo]
    if not present.any():
        return np.zeros(len(te)), present
    safe_lo = np.where(present, lo, 0)
    safe_last = np.where(present, hi - 1, 0)
    if name == "count_over_time":
        return count.astype(np.float64), present
    if name == "present_over_time":
        return np.ones(len(te)), present
    if name == "last_over_time":
        return s.values[safe_last], present
    if name in ("sum_over_time", "avg_over_time"):
        sums = _prefix(s.values)
        total = sums[hi] - sums[lo]
        with np.errstate(all="ignore"):
            return (total if name == "sum_over_time" else total / count), present
    return _extrapolated(name, s, te, range_ms, safe_lo, safe_last, count)


def _extrapolated(
    name: str, s: RangeSeries, te: Ints, range_ms: int, first: Ints, last: Ints, count: Ints
) -> tuple[Floats, Mask]:
    """Prometheus's extrapolatedRate for rate, increase and delta."""
    present = count >= 2
    vals, ts = s.values, s.ts
    result = vals[last] - vals[first]
    counter = name != "delta"
    if counter and len(vals) > 1:
        drops = np.where(vals[1:] < vals[:-1], vals[:-1], 0.0)
        resets = _prefix(drops)  # resets[k]: the drops of pairs before sample k
        result = result + (resets[last] - resets[first])
    with np.errstate(all="ignore"):
        to_start = (ts[first] - (te - range_ms)) / 1000
        to_end = (te - ts[last]) / 1000
        sampled = (ts[last] - ts[first]) / 1000
        average = sampled / (count - 1)
        if counter:
            to_zero = sampled * (vals[first] / result)
            shrink = (result > 0) & (vals[first] >= 0) & (to_zero < to_start)
            to_start = np.where(shrink, to_zero, to_start)
        threshold = average * 1.1
        interval = sampled + np.where(to_start < threshold, to_start, average / 2)
        interval = interval + np.where(to_end < threshold, to_end, average / 2)
        result = result * (interval / sampled)
        if name == "rate":
            result = result / (range_ms / 1000)
    return np.where(present, result, 0.0), present


def _extreme(pick: np.ufunc, s: RangeSeries) -> tuple[Floats, Mask]:
    count = s.hi - s.lo
    present = count > 0
    levels = [s.values]
    width = 1
    while width * 2 <= max(int(count.max(initial=0)), 1):
        prev = levels[-1]
        levels.append(pick(prev[: len(prev) - width], prev[width:]))
        width *= 2
    span = np.where(present, count, 1)
    k = np.floor(np.log2(span)).astype(np.int64)
    out = np.zeros(len(count))
    for level in np.unique(k[present]):
        rows = present & (k == level)
        table = levels[int(level)]
        lo = s.lo[rows]
        out[rows] = pick(table[lo], table[s.hi[rows] - (1 << int(level))])
    return out, present
