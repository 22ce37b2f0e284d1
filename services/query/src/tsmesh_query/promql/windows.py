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
    return windows_of_all(name, [s], te, range_ms)[0]


def windows_of_all(name: str, series: list[RangeSeries], te: Ints, range_ms: int) -> list[tuple[Floats, Mask] | None]:
    """``window_values`` of every series. The series with finite samples are computed together: their
    samples concatenated, their windows one (series x steps) array of indexes, so each operation runs
    once for all of them. Prefix sums stay per series, so a series' answer never depends on the others."""
    if name in EXTREMES:
        return [_extreme(np.fmin if name == "min_over_time" else np.fmax, s) for s in series]
    out: list[tuple[Floats, Mask] | None] = [None] * len(series)
    if name not in VECTORIZED:
        return out
    rows = [i for i, s in enumerate(series) if np.isfinite(s.values).all()]
    if rows:
        for i, answer in zip(rows, _together(name, [series[i] for i in rows], te, range_ms), strict=True):
            out[i] = answer
    return out


def _together(name: str, series: list[RangeSeries], te: Ints, range_ms: int) -> list[tuple[Floats, Mask]]:
    sizes = np.array([len(s.ts) for s in series], dtype=np.int64)
    offsets = (np.cumsum(sizes) - sizes)[:, None]  # each series' first sample in the concatenation
    ts = np.concatenate([s.ts for s in series])
    vals = np.concatenate([s.values for s in series])
    lo, hi = np.stack([s.lo for s in series]) + offsets, np.stack([s.hi for s in series]) + offsets
    # stored samples per window: a rollup's sample stands for ``weights`` of them (integers: exact)
    weights = np.concatenate([np.ones(len(s.ts), np.int64) if s.weights is None else s.weights for s in series])
    stored = np.concatenate(([0], np.cumsum(weights)))
    count = stored[hi] - stored[lo]
    present = count > 0
    safe_lo = np.where(present, lo, 0)
    safe_last = np.where(present, hi - 1, 0)
    if name == "count_over_time":
        values = count.astype(np.float64)
    elif name == "present_over_time":
        values = np.ones(count.shape)
    elif name == "last_over_time":
        values = vals[safe_last] if len(vals) else np.zeros(count.shape)
    elif name in ("sum_over_time", "avg_over_time"):
        # per-series prefix sums, laid out with one leading 0 per series: series i's is shifted by i
        sums = np.concatenate([_prefix(s.values) for s in series])
        shift = np.arange(len(series))[:, None]
        total = sums[hi + shift] - sums[lo + shift]
        with np.errstate(all="ignore"):
            values = total if name == "sum_over_time" else total / count
    else:
        values, present = _extrapolated(name, ts, vals, series, te, range_ms, safe_lo, safe_last, count)
    return [
        (values[i], present[i]) if present[i].any() else (np.zeros(len(te)), present[i]) for i in range(len(series))
    ]


def _resets(series: list[RangeSeries]) -> Floats:
    """Per sample, the counter drops of the pairs before it in its own series (a prefix sum each)."""
    parts = []
    for s in series:
        v = s.values
        drops = np.where(v[1:] < v[:-1], v[:-1], 0.0) if len(v) > 1 else v[:0]
        parts.append(_prefix(drops)[: len(v)])
    return np.concatenate(parts)


def _extrapolated(
    name: str,
    ts: Ints,
    vals: Floats,
    series: list[RangeSeries],
    te: Ints,
    range_ms: int,
    first: Ints,
    last: Ints,
    count: Ints,
) -> tuple[Floats, Mask]:
    """Prometheus's extrapolatedRate for rate, increase and delta."""
    present = count >= 2
    if not len(vals):
        return np.zeros(count.shape), present
    result = vals[last] - vals[first]
    counter = name != "delta"
    if counter:
        resets = _resets(series)
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
