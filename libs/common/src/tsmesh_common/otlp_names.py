"""OTLP metric and attribute names as Prometheus's OTLP receiver writes them (the default
``UnderscoreEscapingWithSuffixes`` strategy): characters outside ``[a-zA-Z0-9_:]`` become ``_``,
unit suffixes are added (``s`` -> ``_seconds``, ``By/s`` -> ``_bytes_per_second``, ``1`` ->
``_ratio`` for gauges), monotonic cumulative sums end in ``_total``. See ADR 0221.
"""

from __future__ import annotations

import functools
import re
from decimal import Decimal

_UNITS = {
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day", "w": "week", "mo": "month", "y": "year"}
_TOKEN_SPLIT = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")
_ANNOTATION = re.compile(r"\{[^}]*\}")


def _unit_word(unit: str, table: dict[str, str]) -> str:
    unit = _ANNOTATION.sub("", unit).strip()
    if not unit:
        return ""
    return "_".join(t for t in _TOKEN_SPLIT.split(table.get(unit, unit)) if t)


def metric_name(name: str, unit: str, *, gauge: bool = False, counter: bool = False) -> str:
    """The Prometheus name of an OTLP metric ``name`` of ``unit``; ``counter`` for a monotonic
    cumulative sum (``_total``), ``gauge`` for a gauge (unit ``1`` becomes ``_ratio``)."""
    tokens = [t for t in _TOKEN_SPLIT.split(name) if t]
    main, _, per = unit.partition("/")
    main_word = _unit_word(main, _UNITS)
    per_word = _unit_word(per, _PER_UNITS)
    if counter:
        tokens = [t for t in tokens if t != "total"]
    if main_word and not _ends_with(tokens, main_word):
        tokens.append(main_word)
    if per_word and not _ends_with(tokens, f"per_{per_word}"):
        tokens += ["per", per_word]
    if counter:
        tokens.append("total")
    if gauge and main.strip() == "1" and not per and tokens[-1:] != ["ratio"]:
        tokens.append("ratio")
    joined = "_".join(tokens) or "_"
    return f"_{joined}" if joined[0].isdigit() else joined


def _ends_with(tokens: list[str], word: str) -> bool:
    suffix = word.split("_")
    return tokens[-len(suffix) :] == suffix


@functools.lru_cache(maxsize=4096)
def label_name(key: str) -> str:
    """An attribute key as a label name: other characters become ``_``; a leading digit gets
    ``key_``, a single leading underscore ``key`` (names starting ``__`` are reserved)."""
    name = _LABEL_BAD.sub("_", key) or "_"
    if name[0].isdigit():
        return f"key_{name}"
    if name.startswith("_") and not name.startswith("__"):
        return f"key{name}"
    return name


def float_text(value: float) -> str:
    """A float as Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` writes it: the ``le`` and
    ``quantile`` label values Prometheus uses (``0.5``, ``10``, ``+Inf``)."""
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "+Inf" if value > 0 else "-Inf"
    return format(Decimal(repr(value)).normalize(), "f")
