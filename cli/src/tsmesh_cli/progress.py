"""Progress of a long transfer: a rich bar on a terminal, a plain line a second otherwise (logs, CI)."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn, TimeRemainingColumn


class Meter:
    """Counts items and bytes; shows items/s and, when the byte total is known, an ETA."""

    def __init__(
        self,
        console: Console,
        label: str,
        unit: str,
        total_bytes: int | None,
        start_bytes: int = 0,
        *,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = 1.0,
    ) -> None:
        self._console = console
        self._label = label
        self._unit = unit
        self._total = total_bytes
        self._start_bytes = start_bytes
        self._clock = clock
        self._every = every_s
        self._began = clock()
        self._last_line = self._began
        self.items = 0
        self.bytes = start_bytes
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> Meter:
        if self._console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[items]} {task.fields[unit]}, {task.fields[rate]} {task.fields[unit]}/s"),
                TimeRemainingColumn(),
                console=self._console,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                self._label, total=self._total, completed=self._start_bytes, items=0, rate="0", unit=self._unit
            )
        return self

    def rate(self) -> float:
        """Items per second since the start."""
        return self.items / max(self._clock() - self._began, 1e-6)

    def eta_s(self) -> float | None:
        """Seconds left at the byte rate so far (``None`` without a total)."""
        done = self.bytes - self._start_bytes
        if self._total is None or done <= 0:
            return None
        return (self._total - self.bytes) / (done / max(self._clock() - self._began, 1e-6))

    def update(self, items: int, bytes_done: int) -> None:
        """The running totals (absolute, not increments)."""
        self.items, self.bytes = items, bytes_done
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=bytes_done, items=f"{items:,}", rate=f"{self.rate():,.0f}")
        elif self._clock() - self._last_line >= self._every:
            self._last_line = self._clock()
            self._console.print(self.line(), highlight=False)

    def line(self) -> str:
        """``write: 120,000 points, 45,000 points/s, 37% of the input, ETA 8s``."""
        text = f"{self._label}: {self.items:,} {self._unit}, {self.rate():,.0f} {self._unit}/s"
        if self._total:
            text += f", {100 * self.bytes / self._total:.0f}% of the input"
        eta = self.eta_s()
        if eta is not None:
            text += f", ETA {eta:.0f}s"
        return text

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif kind is None:
            self._console.print(self.line(), highlight=False)
