"""A/B of the hand-written protobuf wire code against a baseline revision, in one process, on the
same inputs: ingest's request walk and validation (steady state: every identity cached) and query's
bucket and response encoders.

The baseline modules are loaded from ``git show REV:path`` (default ``main``) next to the working
tree's, calls alternate between them, and the best of several rounds is kept (the least disturbed
by other processes). Prints each figure, the baseline's, and the ratio (new / old: 1.00 = same)::

    .venv/bin/python bench/bench_wire_ab.py [--baseline REV] [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from harness import module_at
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_ingest import validation, wirewalk
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.series_id import SeriesIdCache
from tsmesh_query import wire

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000.0


def a_b(rounds: int, calls: int, old: Callable[[], object], new: Callable[[], object]) -> tuple[float, float, float]:
    """Seconds per call of ``old`` and ``new`` (the best of ``rounds`` rounds of ``calls`` calls each,
    the two timed back to back, in alternating order) and the median over rounds of new / old (on a
    shared, busy machine the ratio of adjacent timings is steadier than either figure)."""
    best = [float("inf"), float("inf")]
    ratios: list[float] = []
    for r in range(rounds):
        took = [0.0, 0.0]
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            fn = (old, new)[k]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            took[k] = (time.perf_counter() - start) / calls
            best[k] = min(best[k], took[k])
        ratios.append(took[1] / took[0])
    return best[0], best[1], statistics.median(ratios)


def write_request(points: int, series: int) -> bytes:
    """A WriteRequest of ``points`` points over ``series`` series of three labels (values not 0.0)."""
    now_ns = int(NOW * 1e9)
    return ingest_pb2.WriteRequest(
        points=[
            common_pb2.Point(
                metric="cpu_usage",
                labels={"host": f"host-{i % series}", "region": "eu-west-1", "core": str(i % 8)},
                timestamp_ns=now_ns - i * 1_000_000,
                value=float(i) + 0.5,
            )
            for i in range(points)
        ]
    ).SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="main", help="git revision of the baseline modules")
    parser.add_argument("--rounds", type=int, default=81)
    args = parser.parse_args()
    rev = subprocess.run(
        ["git", "rev-parse", "--short", args.baseline], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    old_validation = module_at(rev, "services/ingest/src/tsmesh_ingest/validation.py", "baseline_validation")
    old_wire = module_at(rev, "services/query/src/tsmesh_query/wire.py", "baseline_wire")
    old_walk = getattr(old_validation, "_walk", None)  # before the walk moved to wirewalk.py
    if old_walk is None:
        old_walk = module_at(rev, "services/ingest/src/tsmesh_ingest/wirewalk.py", "baseline_wirewalk").walk

    request = write_request(1_000, 200)
    limits = ValidationLimits()
    cache = SeriesIdCache()
    old_v = old_validation.Validator(limits, cache, clock=lambda: NOW)
    new_v = validation.Validator(limits, cache, clock=lambda: NOW)
    new_v.validate_request("t", request)  # fills the shared identity cache: the steady state
    warm = new_v.validate_request("t", request)
    assert warm.accepted == 1_000 and _same(old_v.validate_request("t", request), warm)
    by_encoding = cache.encodings("t")
    padded = wirewalk.PAD + request

    rng = np.random.default_rng(7)
    n = 20_000
    starts = np.arange(n, dtype=np.int64) * 60_000_000_000 + 1_700_000_000_000_000_000
    values = rng.normal(size=n)
    has = rng.random(n) > 0.1
    counts = rng.integers(0, 500, size=n)
    heads = [wire.series_head("cpu", {"host": f"h{i}"}) for i in range(20)]
    assert bytes(old_wire.encode_buckets(starts, values, has, counts)[0]) == bytes(
        wire.encode_buckets(starts, values, has, counts)[0]
    )
    bodies = [bytes(wire.encode_buckets(starts[i::20], values[i::20], has[i::20], counts[i::20])[0]) for i in range(20)]
    assert old_wire.encode_response(heads, bodies, 1) == wire.encode_response(heads, bodies, 1)

    cases = [
        (
            "walk, 1,000 cached points",
            40,
            lambda: old_walk(padded, by_encoding, 10_000),
            lambda: wirewalk.walk(padded, by_encoding, 10_000),
        ),
        (
            "validate_request, 1,000 cached points",
            40,
            lambda: old_v.validate_request("t", request),
            lambda: new_v.validate_request("t", request),
        ),
        (
            "encode_buckets, 20,000 buckets",
            10,
            lambda: old_wire.encode_buckets(starts, values, has, counts),
            lambda: wire.encode_buckets(starts, values, has, counts),
        ),
        (
            "encode_response, 20 series",
            2_000,
            lambda: old_wire.encode_response(heads, bodies, 1),
            lambda: wire.encode_response(heads, bodies, 1),
        ),
    ]
    print(f"wire A/B: baseline {rev} (git show) vs working tree, {args.rounds} rounds (ratios: new / baseline)")
    print(f"{'case':42} {'baseline':>12} {'new':>12} {'best ratio':>13} {'median ratio':>13}")
    for name, calls, old, new in cases:
        old_s, new_s, ratio = a_b(args.rounds, calls, old, new)
        print(f"{name:42} {old_s * 1e6:9.1f} µs {new_s * 1e6:9.1f} µs {new_s / old_s:13.3f} {ratio:13.3f}")


def _same(a: object, b: validation.Validated) -> bool:
    return (a.framed, a.series_ids) == (b.framed, b.series_ids)


if __name__ == "__main__":
    main()
