"""Hot-path metrics counted in plain ints and added to their Prometheus metrics later.

A ``prometheus_client`` counter increment takes a lock (and in multiprocess mode writes an mmap),
a histogram observation two; on the cached query path that was several per request. A tally is
bumped without either and added to its metric by :func:`flush`: before every scrape of this worker
(``/metrics``) and every second from the worker's lifespan (:func:`flush_every`), so in
multiprocess mode the other workers' figures are at most a second old.
"""

from __future__ import annotations

import asyncio
import bisect
from typing import Any

_TALLIES: list[TallyCounter | TallyHistogram] = []


class TallyCounter:
    """Increments of one counter (a labelled child) not yet added to it."""

    __slots__ = ("_child", "n")

    def __init__(self, child: Any) -> None:
        self._child = child
        self.n = 0
        _TALLIES.append(self)

    def flush(self) -> None:
        n, self.n = self.n, 0
        if n:
            self._child.inc(n)


class TallyHistogram:
    """Observations of one histogram (a labelled child) not yet added to it, by bucket."""

    __slots__ = ("_bounds", "_child", "counts", "total")

    def __init__(self, child: Any, buckets: tuple[float, ...]) -> None:
        self._child = child
        self._bounds = [*buckets, float("inf")]  # the metric's buckets, as declared
        self.counts = [0] * len(self._bounds)
        self.total = 0.0
        _TALLIES.append(self)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self._bounds, value)] += 1  # le: the first bound >= value
        self.total += value

    def flush(self) -> None:
        counts, self.counts = self.counts, [0] * len(self._bounds)
        total, self.total = self.total, 0.0
        if any(counts):
            # prometheus_client has no bulk observe: add to the child's bucket and sum values, which
            # is what observe() does one at a time (pinned version; tests/gateway/test_tally.py)
            for value, n in zip(self._child._buckets, counts, strict=True):
                if n:
                    value.inc(n)
            self._child._sum.inc(total)


def flush() -> None:
    """Add every tally to its metric."""
    for tally in _TALLIES:
        tally.flush()


async def flush_every(seconds: float) -> None:
    """Flush the tallies every ``seconds`` (run by the worker's lifespan)."""
    while True:
        await asyncio.sleep(seconds)
        flush()
