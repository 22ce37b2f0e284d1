"""How answers are shown: a rich table, CSV, JSON, JSON lines, or a small terminal chart."""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

OUTPUTS = ("table", "csv", "json", "chart")
_BARS = " ▁▂▃▄▅▆▇█"


def iso(ns: int) -> str:
    """A nanosecond epoch as an RFC 3339 UTC time (millisecond precision)."""
    return datetime.fromtimestamp(ns / 1e9, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def labels_text(labels: dict[str, str]) -> str:
    """``{a="1",b="2"}`` (empty string for no labels)."""
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def rows_table(
    console: Console, headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
) -> None:
    """Rows as a rich table."""
    table = Table(title=title)
    for header in headers:
        table.add_column(header)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def rows_csv(out: TextIO, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows as CSV with a header."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(["" if v is None else v for v in row] for row in rows)


def as_json(out: TextIO, value: Any) -> None:
    """Pretty JSON."""
    out.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


def sparkline(values: Sequence[float | None], width: int = 60) -> str:
    """One line of block characters, ``values`` resampled to ``width`` columns (gaps blank)."""
    if not values:
        return ""
    if len(values) > width:
        step = len(values) / width
        picked: list[float | None] = []
        for i in range(width):
            part = [v for v in values[int(i * step) : int((i + 1) * step)] if v is not None]
            picked.append(sum(part) / len(part) if part else None)
        values = picked
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return " " * len(values)
    low, high = min(present), max(present)
    span = (high - low) or 1.0
    return "".join(
        " " if v is None or not math.isfinite(v) else _BARS[1 + int((v - low) / span * (len(_BARS) - 2))]
        for v in values
    )


def range_rows(answer: dict[str, Any]) -> list[list[Any]]:
    """``series, time, value, count`` rows of a ``/v1/query/range`` answer."""
    rows = []
    for series in answer.get("series", []):
        name = series.get("metric", "") + labels_text(series.get("labels", {}))
        for bucket in series.get("buckets", []):
            rows.append([name, iso(int(bucket["start_ns"])), bucket.get("value"), bucket.get("count")])
    return rows


def range_chart(console: Console, answer: dict[str, Any]) -> None:
    """A sparkline per series with its minimum, maximum and last value."""
    for series in answer.get("series", []):
        values = [b.get("value") for b in series.get("buckets", [])]
        present = [v for v in values if v is not None]
        name = series.get("metric", "") + labels_text(series.get("labels", {}))
        console.print(f"[bold]{name}[/bold]")
        console.print(f"  {sparkline(values)}")
        if present:
            console.print(
                f"  min {min(present):g}  max {max(present):g}  last {present[-1]:g}  ({len(values)} buckets)"
            )


def default_console() -> Console:
    """The console for data (stdout); progress and messages go to :func:`error_console`."""
    return Console(file=sys.stdout, soft_wrap=True)


def error_console() -> Console:
    """Messages and progress, on stderr."""
    return Console(file=sys.stderr, soft_wrap=True)
