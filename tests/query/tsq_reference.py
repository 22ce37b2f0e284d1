"""A brute-force reference of QueryRange, computed in Python over the raw points."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class RawPoint:
    series_id: int
    labels: dict[str, str]
    ts: int
    value: float


def _labels_key(labels: dict[str, str]) -> bytes:
    return orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)


def reference(
    points: list[RawPoint],
    start: int,
    end: int,
    step: int,
    aggregation: str,
    group_by: tuple[str, ...] | None,
    fill: str,
) -> list[tuple[dict[str, str], list[tuple[int, float | None, int]]]]:
    """Expected series (sorted by labels) of ``(bucket, value or None, count)``."""
    groups: dict[bytes, tuple[dict[str, str], dict[int, list[RawPoint]]]] = {}
    for p in points:
        if not start <= p.ts < end:
            continue
        out = p.labels if group_by is None else {k: p.labels[k] for k in group_by if p.labels.get(k)}
        entry = groups.setdefault(_labels_key(out), (out, {}))
        entry[1].setdefault(p.ts - p.ts % step, []).append(p)
    first_bucket = start - start % step
    last_bucket = (end - 1) - (end - 1) % step
    result = []
    for key in sorted(groups):
        labels, buckets = groups[key]
        values: dict[int, tuple[float, int]] = {}
        for b, pts in buckets.items():
            ordered = sorted(pts, key=lambda p: (p.ts, p.series_id))
            vals = [p.value for p in pts]
            value = {
                "avg": sum(vals) / len(vals),
                "min": min(vals),
                "max": max(vals),
                "sum": sum(vals),
                "count": float(len(vals)),
                "first": ordered[0].value,
                "last": ordered[-1].value,
            }[aggregation]
            values[b] = (value, len(vals))
        rows: list[tuple[int, float | None, int]] = []
        grid = range(first_bucket, last_bucket + 1, step)
        if fill == "none":
            rows = [(b, *values[b]) for b in sorted(values)]
        else:
            rows = [(b, *values[b]) if b in values else (b, None, 0) for b in grid]
            if fill == "previous":
                last = None
                for i, (b, v, _c) in enumerate(rows):
                    if v is None:
                        rows[i] = (b, last, 0)
                    else:
                        last = v
            elif fill == "linear":
                known = [i for i, r in enumerate(rows) if r[1] is not None]
                for left, right in itertools.pairwise(known):
                    v0, v1 = rows[left][1], rows[right][1]
                    for i in range(left + 1, right):
                        line = v0 + (v1 - v0) * (i - left) / (right - left)
                        if not math.isfinite(line) and math.isfinite(v0) and math.isfinite(v1):
                            t = (i - left) / (right - left)  # v1 - v0 overflowed
                            line = v0 * (1.0 - t) + v1 * t
                        rows[i] = (rows[i][0], line, 0)
        result.append((labels, rows))
    return result
