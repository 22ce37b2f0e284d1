"""Adaptive batch sizing of the writer: grow while the consumer lags, shrink when it keeps up."""

from __future__ import annotations


class AdaptiveBatcher:
    """The target rows per transaction, between ``min_rows`` and ``max_rows``.

    A batch that filled its target while records were still waiting doubles the target (fewer,
    larger transactions amortise per-commit costs under lag); a batch written because nothing more
    was waiting, at under half the target, halves it (small transactions keep latency low).
    Collection of one batch never exceeds ``max_wait_seconds``; once its first record is in, it
    waits ``linger_seconds`` for more even when nothing is waiting (a trickle of small records then
    costs one transaction per linger, not one each), unless the target is reached first.
    """

    def __init__(self, min_rows: int, max_rows: int, max_wait_seconds: float, linger_seconds: float = 0.0) -> None:
        if not 0 < min_rows <= max_rows:
            raise ValueError("need 0 < min_rows <= max_rows")
        if not 0 <= linger_seconds <= max_wait_seconds:
            raise ValueError("need 0 <= linger_seconds <= max_wait_seconds")
        self.min_rows = min_rows
        self.max_rows = max_rows
        self.max_wait_seconds = max_wait_seconds
        self.linger_seconds = linger_seconds
        self.target = min_rows

    def full(self, rows: int) -> bool:
        return rows >= self.target

    def observe(self, rows: int, lagging: bool) -> None:
        if lagging and rows >= self.target:
            self.target = min(self.max_rows, self.target * 2)
        elif not lagging and rows < self.target // 2:
            self.target = max(self.min_rows, self.target // 2)
