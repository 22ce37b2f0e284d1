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


SELECTORS = ("g", 'g{dc="x"}', "c_total", "gap", 'h_bucket{le="1"}', 'g{host=~"a|b"}')
RANGE_FUNCTIONS = [
    "rate",
    "increase",
    "delta",
    "irate",
    "idelta",
    "deriv",
    "changes",
    "resets",
    "avg_over_time",
    "sum_over_time",
    "min_over_time",
    "max_over_time",
    "last_over_time",
    "stddev_over_time",
    "count_over_time",
]
# no exp, ^ or %: a one-ulp difference between Go's and C's exp/pow becomes a large one through them
INSTANT_FUNCTIONS = ("abs", "ceil", "floor", "sqrt", "ln", "sgn", "round", "timestamp")
AGGREGATIONS = ("sum", "avg", "min", "max", "count", "stddev", "stdvar", "group")


def random_queries(seed: int, count: int) -> list[str]:
    """Random compositions of selectors, range functions, subqueries, functions, aggregations and
    operators, three levels deep (the same ``seed`` gives the same queries)."""
    rng = random.Random(seed)

    def vector(depth: int) -> str:
        r = rng.random()
        if depth <= 0 or r < 0.25:
            offset = f" offset {rng.choice(['1m', '5m', '-2m', '30s'])}" if rng.random() < 0.2 else ""
            return rng.choice(SELECTORS) + offset
        if r < 0.45:
            if rng.random() < 0.8:
                ranged = f"{rng.choice(SELECTORS)}[{rng.choice(['1m', '2m', '5m', '10m', '45s'])}]"
            else:
                ranged = f"({vector(depth - 1)})[{rng.choice(['5m', '10m'])}:{rng.choice(['30s', '1m', '2m'])}]"
            return f"{rng.choice(RANGE_FUNCTIONS)}({ranged})"
        if r < 0.6:
            return f"{rng.choice(INSTANT_FUNCTIONS)}({vector(depth - 1)})"
        if r < 0.78:
            grouping = rng.choice(["", " by (dc)", " without (host)", " by (job)", " by (host, dc)"])
            return f"{rng.choice(AGGREGATIONS)}{grouping} ({vector(depth - 1)})"
        if r < 0.9:
            op = rng.choice(["+", "-", "*", "/", ">", "<", "==", ">="])
            modifier = rng.choice(["", " bool"]) if op in (">", "<", "==", ">=") else ""
            return f"({vector(depth - 1)}) {op}{modifier} {rng.choice(['2', '0.5', '100', '-1'])}"
        op = rng.choice(["+", "-", "/", ">", "and", "or", "unless", "*"])
        matching = rng.choice(["", " on(host, dc)", " ignoring(job)", " on(dc)", " on()"])
        return f"({vector(depth - 1)}) {op}{matching} ({vector(depth - 1)})"

    return [vector(3) for _ in range(count)]
