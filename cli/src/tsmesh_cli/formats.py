"""Input formats of ``write``, read in batches that remember the byte offset where they end.

- ``lp``: InfluxDB line protocol, sent as is to ``/api/v2/write`` (fields become ``<measurement>_<field>``);
- ``csv``: a header naming ``metric``, ``timestamp_ns`` and ``value``; every other column is a label;
- ``jsonl``: one ``{"metric", "labels", "timestamp_ns", "value"}`` object per line, sent to ``/v1/write``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from tsmesh_cli.errors import REFUSED, CliError

FORMATS = ("lp", "csv", "jsonl")
_BY_SUFFIX = {".lp": "lp", ".line": "lp", ".txt": "lp", ".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
CSV_REQUIRED = ("metric", "timestamp_ns", "value")


@dataclass
class Batch:
    """One request's worth of points and the input offset just after them."""

    points: int
    end: int
    lines: bytes = b""
    objects: list[dict[str, Any]] = field(default_factory=list)


def guess_format(name: str, first_line: bytes) -> str:
    """The format from the file name's suffix, else from the first line."""
    for suffix, fmt in _BY_SUFFIX.items():
        if name.lower().endswith(suffix):
            return fmt
    text = first_line.strip()
    if text.startswith(b"{"):
        return "jsonl"
    if b"metric" in text and b"," in text and b" " not in text:
        return "csv"
    return "lp"


def read_header(stream: IO[bytes]) -> tuple[list[str], int]:
    """The CSV header's columns and the offset after it (checked for the required columns)."""
    line = stream.readline()
    columns = next(csv.reader(io.StringIO(line.decode("utf-8"))), [])
    columns = [c.strip() for c in columns]
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise CliError(
            f"CSV header needs the columns {', '.join(CSV_REQUIRED)} (missing: {', '.join(missing)})", REFUSED
        )
    return columns, len(line)


def _csv_point(columns: list[str], line: bytes, number: int) -> dict[str, Any]:
    values = next(csv.reader(io.StringIO(line.decode("utf-8"))), [])
    if len(values) != len(columns):
        raise CliError(f"CSV line {number}: {len(values)} values for {len(columns)} columns", REFUSED)
    row = dict(zip(columns, values, strict=True))
    try:
        return {
            "metric": row["metric"],
            "timestamp_ns": int(row["timestamp_ns"]),
            "value": float(row["value"]),
            "labels": {k: v for k, v in row.items() if k not in CSV_REQUIRED and v != ""},
        }
    except ValueError as exc:
        raise CliError(f"CSV line {number}: {exc}", REFUSED) from None


def _json_point(line: bytes, number: int) -> dict[str, Any]:
    try:
        point = json.loads(line)
    except ValueError as exc:
        raise CliError(f"JSON line {number}: {exc}", REFUSED) from None
    if not isinstance(point, dict):
        raise CliError(f"JSON line {number}: not an object", REFUSED)
    return point


def batches(
    stream: IO[bytes], fmt: str, *, start: int, batch_points: int, columns: list[str] | None = None
) -> Iterator[Batch]:
    """Batches of at most ``batch_points`` points from ``stream``, whose position is ``start``."""
    offset = start
    batch = Batch(0, start)
    chunks: list[bytes] = []
    for number, line in enumerate(iter(stream.readline, b""), start=1):
        offset += len(line)
        text = line.strip()
        if text and not text.startswith(b"#"):
            if fmt == "lp":
                chunks.append(text + b"\n")
            elif fmt == "csv":
                batch.objects.append(_csv_point(columns or [], text, number))
            else:
                batch.objects.append(_json_point(text, number))
            batch.points += 1
        batch.end = offset
        if batch.points >= batch_points:
            batch.lines = b"".join(chunks)
            yield batch
            batch, chunks = Batch(0, offset), []
    if batch.points or batch.end > start:
        batch.lines = b"".join(chunks)
        yield batch
