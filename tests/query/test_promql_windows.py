"""The prefix-sum range functions equal the per-window reference loop (counter resets included)."""

from __future__ import annotations

import numpy as np
import pytest

from tsmesh_query.promql.functions import RANGE_FUNCTIONS
from tsmesh_query.promql.values import RangeSeries
from tsmesh_query.promql.windows import VECTORIZED, window_values, windows_of_all


@pytest.mark.parametrize("name", sorted(VECTORIZED))
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_vectorized_windows_equal_the_loop(name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ts = np.cumsum(rng.integers(1_000, 30_000, 400)).astype(np.int64)
    values = np.cumsum(rng.uniform(0, 5, 400))
    values[rng.integers(0, 400, 6)] = 0.0  # counter resets
    te = np.arange(ts[0] - 60_000, ts[-1] + 120_000, 37_000, dtype=np.int64)
    range_ms = 300_000
    lo = np.searchsorted(ts, te - range_ms, "left").astype(np.int64)
    hi = np.searchsorted(ts, te, "right").astype(np.int64)
    whole = window_values(name, RangeSeries((), ts, values, lo, hi), te, range_ms)
    assert whole is not None
    fast, present = whole
    loop = RANGE_FUNCTIONS[name]
    for i in range(len(te)):
        expected = loop(ts[lo[i] : hi[i]], values[lo[i] : hi[i]], int(te[i]), range_ms) if hi[i] > lo[i] else None
        assert present[i] == (expected is not None)
        if expected is not None:
            assert fast[i] == pytest.approx(expected, rel=1e-9)


def test_non_finite_samples_take_the_loop() -> None:
    ts = np.array([0, 1000], dtype=np.int64)
    series = RangeSeries((), ts, np.array([1.0, np.nan]), np.array([0]), np.array([2]))
    assert window_values("sum_over_time", series, np.array([1000]), 5000) is None


@pytest.mark.parametrize("name", ["min_over_time", "max_over_time"])
def test_extremes_ignore_nan_unless_alone(name: str) -> None:
    ts = np.arange(0, 10_000, 1000, dtype=np.int64)
    values = np.array([3.0, np.nan, 1.0, np.nan, np.nan, 7.0, 2.0, np.nan, 5.0, 4.0])
    te = np.arange(0, 12_000, 1000, dtype=np.int64)
    lo = np.searchsorted(ts, te - 2500, "left").astype(np.int64)
    hi = np.searchsorted(ts, te, "right").astype(np.int64)
    whole = window_values(name, RangeSeries((), ts, values, lo, hi), te, 2500)
    assert whole is not None
    for i in range(len(te)):
        expected = RANGE_FUNCTIONS[name](ts[lo[i] : hi[i]], values[lo[i] : hi[i]], int(te[i]), 2500)
        assert expected is not None
        assert whole[0][i] == pytest.approx(expected, nan_ok=True)


def _series(rng: np.random.Generator, n: int, te: np.ndarray, range_ms: int, weighted: bool = False) -> RangeSeries:
    ts = np.cumsum(rng.integers(1_000, 30_000, n)).astype(np.int64)
    values = np.cumsum(rng.uniform(0, 5, n))
    if n:
        values[rng.integers(0, n, 3)] = 0.0
    lo = np.searchsorted(ts, te - range_ms, "left").astype(np.int64)
    hi = np.searchsorted(ts, te, "right").astype(np.int64)
    weights = rng.integers(1, 5, n).astype(np.int64) if weighted else None
    return RangeSeries((), ts, values, lo, hi, weights)


@pytest.mark.parametrize("name", sorted(VECTORIZED))
def test_series_computed_together_answer_as_each_alone_to_the_bit(name: str) -> None:
    rng = np.random.default_rng(7)
    te = np.arange(0, 3_000_000, 41_000, dtype=np.int64)
    series = [_series(rng, n, te, 300_000, weighted=n % 2 == 1) for n in (300, 0, 1, 2, 157, 90)]
    series.append(
        RangeSeries(
            (), np.array([5, 9], dtype=np.int64), np.array([1.0, np.nan]), series[0].lo * 0, series[0].lo * 0 + 2
        )
    )
    together = windows_of_all(name, series, te, 300_000)
    for s, got in zip(series, together, strict=True):
        alone = window_values(name, s, te, 300_000)
        assert (got is None) == (alone is None)
        if got is not None and alone is not None:
            assert got[1].tolist() == alone[1].tolist()
            assert got[0][got[1]].tobytes() == alone[0][alone[1]].tobytes()
