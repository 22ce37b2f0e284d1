"""The data of the PromQL reference test (the local Prometheus is ``bench/local_prometheus``).

Data: gauges, counters with resets, a classic histogram and a series with gaps, 15 s apart over
four hours ending one hour before now (Prometheus keeps it: retention is set far out).
"""

from __future__ import annotations

import random
import time

from local_prometheus import Dataset

BUCKETS = ("0.1", "0.5", "1", "5", "+Inf")


def make_dataset(seed: int = 13) -> Dataset:
    rng = random.Random(seed)
    end_s = (int(time.time()) // 3600 - 1) * 3600
    start_s = end_s - 4 * 3600
    steps = range(0, 4 * 3600, 15)
    series: list[tuple[str, dict[str, str], list[tuple[int, float]]]] = []
    for i, (host, dc) in enumerate([(h, d) for d in ("x", "y") for h in ("a", "b", "c")]):
        value = rng.uniform(10, 100)
        points = []
        for k in steps:
            value += rng.uniform(-3, 3)
            points.append(((start_s + k) * 1000 + i * 1000, round(value, 4)))
        series.append(("g", {"host": host, "dc": dc, "job": "node"}, points))
    for i, host in enumerate(("a", "b", "c", "d")):
        value = rng.uniform(0, 50)
        points = []
        for k in steps:
            value = 0.0 if rng.random() < 0.004 else value + rng.uniform(0, 5 + i)
            points.append(((start_s + k) * 1000 + 500 + i * 2000, round(value, 3)))
        series.append(("c_total", {"host": host, "dc": "xy"[i % 2], "job": "api"}, points))
    for dc in ("x", "y"):
        counts = [0.0] * len(BUCKETS)
        points_by = [[] for _ in BUCKETS]  # type: list[list[tuple[int, float]]]
        for k in steps:
            for _ in range(rng.randint(0, 6)):
                obs = rng.expovariate(1.5)
                for j, le in enumerate(BUCKETS):
                    if obs <= float(le):
                        counts[j] += 1
            for j in range(len(BUCKETS)):
                points_by[j].append(((start_s + k) * 1000, counts[j]))
        for j, le in enumerate(BUCKETS):
            series.append(("h_bucket", {"le": le, "dc": dc, "job": "api"}, points_by[j]))
    gap = [
        ((start_s + k) * 1000 + 7000, round(rng.uniform(0, 10), 3))
        for k in steps
        if not (3600 <= k < 4500 or 7200 <= k < 7320 or 10000 <= k < 11000)
    ]
    series.append(("gap", {"job": "batch"}, gap))
    return Dataset(series, start_s * 1000, end_s * 1000)
