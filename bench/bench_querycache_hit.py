"""In-process A/B of a micro-cache hit through the cached query routes' handler (``GET
/v1/query/range``): A = ``tsmesh_gateway/querycache.py`` at a git ref (default ``main``), B = this
checkout's. Both run over the same stand-in cache (a hit every time, generation known locally), so
only the handler's own cost differs. Rounds alternate; prints best and median ns per hit and B/A.

    .venv/bin/python bench/bench_querycache_hit.py [--ref main] [--rounds 15] [--calls 200000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace
from typing import Any

from harness import module_at

from tsmesh_common.context import Principal
from tsmesh_gateway import querycache

RAW = b"metric=cpu&start_ns=0&end_ns=3600000000000&step=60s&agg=avg"


class HitCache:
    """Every lookup hits: the generation is known locally and the entry is there."""

    body = b'{"series":[]}'

    def current(self, tenant_id: str) -> int:
        return 7

    def get(self, tenant_id: str, key: bytes, generation: int) -> bytes:
        return self.body


def handler(module: Any) -> Any:
    deps = SimpleNamespace(
        cache=HitCache(),
        upstreams=SimpleNamespace(query=None, query_stub=None),
        cfg=SimpleNamespace(max_json_depth=32),
    )
    return module.QueryCache(deps).handlers()[("GET", "/v1/query/range")]


def per_call_ns(answer: Any, caller: Any, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        coro = answer(caller, RAW, False)
        try:  # noqa: SIM105 - a with-block would add its own cost to every measured call
            coro.send(None)  # a hit never awaits: the coroutine returns on its first step
        except StopIteration:
            pass
    return (time.perf_counter_ns() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ref", default="main")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    caller = SimpleNamespace(principal=Principal("t-1", "u", frozenset({"read"}), None, "id", "jwt"))
    sides = {
        f"A {args.ref}": handler(
            module_at(
                args.ref, "services/gateway/src/tsmesh_gateway/querycache.py", "tsmesh_gateway.querycache_baseline"
            )
        ),
        "B branch": handler(querycache),
    }
    assert all(per_call_ns(h, caller, 1) >= 0 for h in sides.values())
    times: dict[str, list[float]] = {name: [] for name in sides}
    for i in range(args.rounds):
        order = list(sides.items()) if i % 2 == 0 else list(reversed(sides.items()))
        for name, answer in order:
            times[name].append(per_call_ns(answer, caller, args.calls))
    for name, samples in times.items():
        print(f"{name:10} best {min(samples):6.0f} ns  median {statistics.median(samples):6.0f} ns per hit")
    (_, a), (_, b) = times.items()
    print(f"B/A: best {min(b) / min(a):.2f}x  median {statistics.median(b) / statistics.median(a):.2f}x")


if __name__ == "__main__":
    main()
