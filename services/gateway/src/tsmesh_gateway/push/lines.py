"""InfluxDB line protocol bodies into tsmesh points with bounded memory (ADR 0222): points go into a
:class:`~tsmesh_common.pointwire.RequestWriter` (its cap refuses a body with too many), and of the
bad lines only the first :data:`MAX_LINE_ERRORS` reasons are kept (all are counted). Good lines are
stored even when others are bad, as InfluxDB does."""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field

from tsmesh_common.pointwire import RequestWriter, identity
from tsmesh_gateway.lineprotocol import INT64_MAX, INT64_MIN, LineError, metric_name, parse_line

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


def translate_lines(
    body: bytes, *, scale: int, bucket: str, writer: RequestWriter, now_ns: int | None = None
) -> LinesOutcome:
    """Add the points of a line protocol ``body`` (timestamps in units of ``scale`` ns) to
    ``writer``; ``bucket`` becomes a label."""
    outcome = LinesOutcome()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        outcome.refuse(body.count(b"\n", 0, exc.start) + 1, "not UTF-8")
        return outcome
    default_ts = (now_ns if now_ns is not None else time.time_ns()) // scale * scale
    identities: dict[tuple[str, tuple[tuple[str, str], ...]], bytes] = {}
    for number, raw_line in enumerate(text.split("\n"), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
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
            metric = metric_name(parsed.measurement, name)
            key = identities.get((metric, label_items))
            if key is None:
                key = identities[(metric, label_items)] = identity(metric, label_items)
            writer.add(key, ts, value)
            outcome.line_of_point.append(number)
    return outcome
