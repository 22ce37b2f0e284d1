"""InfluxDB line protocol bodies into tsmesh points with bounded memory (ADR 0222): points go into a
:class:`~tsmesh_common.pointwire.RequestWriter` (its cap refuses a body with too many), and of the
bad lines only the first :data:`MAX_LINE_ERRORS` reasons are kept (all are counted). Good lines are
stored even when others are bad, as InfluxDB does."""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat

from tsmesh_common.pointwire import RequestWriter, identity
from tsmesh_gateway.lineprotocol import INT64_MAX, INT64_MIN, LineError, field_value, metric_name, parse_line, timestamp

MAX_LINE_ERRORS = 100


@dataclass
class LinesOutcome:
    """The body line of each point written, the first bad lines' (line, reason), and how many bad lines."""

    line_of_point: array[int] = field(default_factory=lambda: array("q"))
    errors: list[tuple[int, str]] = field(default_factory=list)
    bad_lines: int = 0

    def refuse(self, line: int, reason: str) -> None:
        self.bad_lines += 1
        if len(self.errors) < MAX_LINE_ERRORS:
            self.errors.append((line, reason))


class LineSeriesCache:
    """What the common-line path learnt about series, kept across bodies (agents send the same
    series every interval): a series text's (measurement, labels) and each field's identity bytes,
    per bucket. At most ``max_entries`` of each; full, it starts again empty."""

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self.series: dict[tuple[str, str], tuple[str, tuple[tuple[str, str], ...]] | None] = {}
        self.identities: dict[tuple[str, str, str], bytes] = {}


def translate_lines(
    body: bytes,
    *,
    scale: int,
    bucket: str,
    writer: RequestWriter,
    now_ns: int | None = None,
    cache: LineSeriesCache | None = None,
) -> LinesOutcome:
    """Add the points of a line protocol ``body`` (timestamps in units of ``scale`` ns) to
    ``writer``; ``bucket`` becomes a label; ``cache`` is kept across bodies (else one per body)."""
    outcome = LinesOutcome()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        outcome.refuse(body.count(b"\n", 0, exc.start) + 1, "not UTF-8")
        return outcome
    default_ts = (now_ns if now_ns is not None else time.time_ns()) // scale * scale
    fast = _FastLines(bucket, writer, cache or LineSeriesCache())
    for number, raw_line in enumerate(_lines(text), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        written = fast.write(line, scale, default_ts)
        if written:
            outcome.line_of_point.extend(repeat(number, written))
            continue
        try:
            parsed = parse_line(line)
            ts = default_ts if parsed.timestamp is None else parsed.timestamp * scale
            if not INT64_MIN <= ts <= INT64_MAX:
                raise LineError("timestamp out of range for the precision")
        except LineError as exc:
            outcome.refuse(number, str(exc))
            continue
        labels = dict(parsed.tags)
        labels["bucket"] = bucket
        label_items = tuple(sorted(labels.items()))
        for name, value in parsed.fields:
            writer.add(identity(metric_name(parsed.measurement, name), label_items), ts, value)
            outcome.line_of_point.append(number)
    return outcome


def _lines(text: str) -> Iterator[str]:
    """The lines of ``text`` one at a time (one ``split`` of a 10 MiB body holds the interpreter,
    and so the event loop, for tens of milliseconds)."""
    start = 0
    end = text.find("\n")
    while end >= 0:
        yield text[start:end]
        start = end + 1
        end = text.find("\n", start)
    yield text[start:]


class _FastLines:
    """The common line, written without the general parser: no backslash or quote, one space
    between series, fields and timestamp. Values and timestamps are read by the general parser's
    own :func:`~tsmesh_gateway.lineprotocol.field_value` and ``timestamp``; each series' labels
    come from the general parser once (so they are what it would make) and each (series, field)'s
    identity bytes are kept in a :class:`LineSeriesCache`; anything else returns 0 and takes the
    general path."""

    def __init__(self, bucket: str, writer: RequestWriter, cache: LineSeriesCache) -> None:
        self._bucket = bucket
        self._writer = writer
        self._cache = cache

    def write(self, line: str, scale: int, default_ts: int) -> int:
        """The number of points written for ``line`` (0: not a common line, nothing written)."""
        if "\\" in line or '"' in line:
            return 0
        parts = line.split(" ")
        try:
            if len(parts) == 3:
                ts = timestamp(parts[2]) * scale
                if not INT64_MIN <= ts <= INT64_MAX:
                    return 0
            elif len(parts) == 2:
                ts = default_ts
            else:
                return 0
            series = self._series_of(parts[0])
            if series is None:
                return 0
            values: list[tuple[str, float]] = []
            for item in parts[1].split(","):
                name, sep, raw = item.partition("=")
                if not sep or not name or "=" in raw:
                    return 0
                values.append((name, field_value(name, raw)))
        except LineError:
            return 0
        add = self._writer.add
        identities = self._cache.identities
        for name, value in values:
            key = identities.get((self._bucket, parts[0], name))
            if key is None:
                measurement, labels = series
                key = identity(metric_name(measurement, name), labels)
                if len(identities) >= self._cache.max_entries:
                    identities.clear()
                identities[(self._bucket, parts[0], name)] = key
            add(key, ts, value)
        return len(values)

    def _series_of(self, text: str) -> tuple[str, tuple[tuple[str, str], ...]] | None:
        known = self._cache.series
        if (self._bucket, text) in known:
            return known[(self._bucket, text)]
        try:
            parsed = parse_line(f"{text} _=0")
        except LineError:
            found = None
        else:
            labels = dict(parsed.tags)
            labels["bucket"] = self._bucket
            found = (parsed.measurement, tuple(sorted(labels.items())))
        if len(known) >= self._cache.max_entries:
            known.clear()
        known[(self._bucket, text)] = found
        return found
