"""The values passed between the stages: samples fetched per selector, and the evaluator's results.

Timestamps are Unix milliseconds (int64), as in Prometheus. An instant vector over all evaluation
steps is a ``Frame``: per series a value array and a presence mask, one slot per step.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from tsmesh_common.errors import FailedPrecondition

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]
Labels = tuple[tuple[str, str], ...]  # sorted by name; no empty values
NAME = "__name__"


def make_labels(pairs: Mapping[str, str] | Iterable[tuple[str, str]]) -> Labels:
    """Sorted label pairs without empty values (an empty value is an absent label in PromQL)."""
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    return tuple(sorted((k, v) for k, v in items if v != ""))


def drop_name(labels: Labels) -> Labels:
    return tuple(p for p in labels if p[0] != NAME)


class ExecutionError(FailedPrecondition):
    """A query that parsed but cannot be evaluated (Prometheus's ``execution`` error, HTTP 422)."""


@dataclass(frozen=True, slots=True)
class RawSeries:
    """One stored series' samples in ascending time; from a rollup (``rollups``), each sample
    stands for ``weights`` stored samples."""

    labels: Labels
    ts: Ints
    values: Floats
    weights: Ints | None = None


@dataclass(frozen=True)
class SampleSet:
    """Stage 4's output: the raw samples of every selector of the plan, keyed by its matchers."""

    by_selector: dict[tuple[tuple[str, str, str], ...], list[RawSeries]] = field(default_factory=dict)


@dataclass(slots=True)
class Series:
    """One series of an instant vector over the evaluation steps; ``sample_ts`` (ms) is kept by
    plain selectors for ``timestamp()``."""

    labels: Labels
    values: Floats
    present: Mask
    sample_ts: Ints | None = None


@dataclass(slots=True)
class Frame:
    series: list[Series]


@dataclass(slots=True)
class Scalar:
    values: Floats


@dataclass(slots=True)
class Text:
    value: str


@dataclass(slots=True)
class RangeSeries:
    """A series' samples and, per step, the window ``[lo, hi)`` of sample indexes in range."""

    labels: Labels
    ts: Ints
    values: Floats
    lo: Ints
    hi: Ints
    weights: Ints | None = None  # see RawSeries


@dataclass(slots=True)
class RangeFrame:
    """A range vector per step: the windows end at ``te`` (ms, after offset/@) and span ``range_ms``."""

    series: list[RangeSeries]
    te: Ints
    range_ms: int


Value = Frame | Scalar | Text | RangeFrame


def merge(series: Iterable[Series]) -> Frame:
    """One Frame with one series per label set; two series present at one step with the same
    labels are Prometheus's "vector cannot contain metrics with the same labelset"."""
    out: dict[Labels, Series] = {}
    for s in series:
        if not s.present.any():
            continue
        seen = out.get(s.labels)
        if seen is None:
            out[s.labels] = Series(s.labels, s.values.copy(), s.present.copy(), s.sample_ts)
            continue
        if (seen.present & s.present).any():
            raise ExecutionError("vector cannot contain metrics with the same labelset")
        seen.values = np.where(s.present, s.values, seen.values)
        seen.present = seen.present | s.present
        seen.sample_ts = None
    return Frame(list(out.values()))
