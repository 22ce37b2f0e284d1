"""An InfluxDB line protocol parser producing tsmesh points.

``measurement[,tag=value...] field=value[,field=value...] [timestamp]``: backslash escapes commas,
spaces and equals signs (measurement: commas and spaces); field values are floats, integers
(``12i``), unsigned integers (``12u``) or booleans (``t``/``true``/...); string fields are refused,
line by line. Each field becomes the metric ``<measurement>_<field>``, tags become labels, and
characters a metric or label name cannot hold become ``_``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from tsmesh.v1 import common_pb2

PRECISION_NS = {"ns": 1, "n": 1, "us": 1_000, "u": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1
TRUE = frozenset({"t", "T", "true", "True", "TRUE"})
FALSE = frozenset({"f", "F", "false", "False", "FALSE"})
_FLOAT = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_INT = re.compile(r"[-+]?\d+")
_INFINITE = (float("inf"), float("-inf"))
_NAME_BAD = re.compile(r"[^A-Za-z0-9_:]")
_LABEL_BAD = re.compile(r"[^A-Za-z0-9_]")
# What a label value cannot hold in the store (jsonb): NUL and lone surrogates (ADR 0210).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class LineError(ValueError):
    """A line that cannot be stored, with the reason."""


@dataclass(frozen=True, slots=True)
class ParsedLine:
    measurement: str
    tags: dict[str, str]
    fields: list[tuple[str, float]]
    timestamp: int | None


def metric_name(measurement: str, field: str) -> str:
    name = _NAME_BAD.sub("_", f"{measurement}_{field}")
    return f"_{name}" if name[0].isdigit() else name


def label_name(key: str) -> str:
    name = _LABEL_BAD.sub("_", key)
    return f"_{name}" if name[0].isdigit() else name


def _unescape(text: str, specials: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and (text[i + 1] in specials or text[i + 1] == "\\"):
            out.append(text[i + 1])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _split(text: str, sep: str, *, quotes: bool = False) -> list[str]:
    """Split on unescaped ``sep`` (outside double quotes when ``quotes``), keeping escapes."""
    parts: list[str] = []
    start = i = 0
    in_quotes = False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if quotes and ch == '"':
            in_quotes = not in_quotes
        elif ch == sep and not in_quotes:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    if in_quotes:
        raise LineError("unterminated string field value")
    parts.append(text[start:])
    return parts


def _first_space(text: str) -> int:
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == " ":
            return i
        i += 1
    return -1


def field_value(key: str, raw: str) -> float:
    """The value of field ``key`` written ``raw``: an ``i`` integer, a float, a ``u`` unsigned
    integer or a boolean (the common kinds first); anything else is a :class:`LineError`."""
    if not raw:
        raise LineError(f"field {key!r} has no value")
    last = raw[-1]
    if last == "i" and _INT.fullmatch(raw[:-1]):
        value = int(raw[:-1])
        if not INT64_MIN <= value <= INT64_MAX:
            raise LineError(f"integer field {key!r} out of the int64 range")
        return float(value)
    if _FLOAT.fullmatch(raw):
        number = float(raw)
        if number in _INFINITE:
            raise LineError(f"float field {key!r} out of range")
        return number
    if last == "u" and raw[:-1].isdigit():
        value = int(raw[:-1])
        if value > UINT64_MAX:
            raise LineError(f"unsigned field {key!r} out of the uint64 range")
        return float(value)
    if raw in TRUE:
        return 1.0
    if raw in FALSE:
        return 0.0
    if raw[0] == '"':
        raise LineError(f"string field {key!r} is not supported (only numbers and booleans)")
    raise LineError(f"invalid value {raw!r} for field {key!r}")


def timestamp(raw: str) -> int:
    """A line's timestamp, in the body's precision (a :class:`LineError` when not an integer)."""
    if not _INT.fullmatch(raw):
        raise LineError(f"invalid timestamp {raw!r}")
    return int(raw)


def _pair(text: str, what: str) -> tuple[str, str]:
    parts = _split(text, "=")
    if len(parts) == 2 and parts[0] and not parts[1]:
        raise LineError(f"{what} {parts[0]!r} has no value")
    if len(parts) != 2 or not parts[0]:
        raise LineError(f"invalid {what} {text!r} (expected key=value)")
    return parts[0], parts[1]


def parse_line(line: str) -> ParsedLine:
    """Parse one non-empty, non-comment line."""
    cut = _first_space(line)
    if cut < 0:
        raise LineError("missing fields")
    sections = [line[:cut], *(s for s in _split(line[cut + 1 :], " ", quotes=True) if s != "")]
    if len(sections) < 2:
        raise LineError("missing fields")
    if len(sections) > 3:
        raise LineError("unexpected text after the timestamp")
    series = _split(sections[0], ",")
    measurement = _unescape(series[0], ", ")
    if not measurement:
        raise LineError("missing measurement")
    tags: dict[str, str] = {}
    for item in series[1:]:
        key, value = _pair(item, "tag")
        value = _unescape(value, ",= ")
        if _UNSTORABLE.search(value) is not None:
            raise LineError(f"tag {key!r} value must not contain NUL (U+0000) or lone surrogates")
        tags[label_name(_unescape(key, ",= "))] = value
    fields: list[tuple[str, float]] = []
    for item in _split(sections[1], ",", quotes=True):
        key, raw = _pair(item, "field")
        name = _unescape(key, ",= ")
        fields.append((name, field_value(name, raw)))
    return ParsedLine(measurement, tags, fields, timestamp(sections[2]) if len(sections) == 3 else None)


@dataclass
class Parsed:
    """The points of a body, the body line of each point, and the refused lines."""

    points: list[common_pb2.Point]
    line_of_point: list[int]
    errors: list[tuple[int, str]]


def parse_body(text: str, *, precision: str, bucket: str, now_ns: int | None = None) -> Parsed:
    """Parse a whole write body; good lines become points, bad lines become (line number, reason)."""
    scale = PRECISION_NS[precision]
    default_ts = (now_ns if now_ns is not None else time.time_ns()) // scale * scale
    result = Parsed([], [], [])
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
            result.errors.append((number, str(exc)))
            continue
        labels = dict(parsed.tags)
        labels["bucket"] = bucket
        for field, value in parsed.fields:
            result.points.append(
                common_pb2.Point(
                    metric=metric_name(parsed.measurement, field), labels=labels, timestamp_ns=ts, value=value
                )
            )
            result.line_of_point.append(number)
    return result
