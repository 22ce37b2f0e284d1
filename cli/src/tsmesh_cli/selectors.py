"""Selectors and times as typed on a command line: ``cpu{host="a",dc=~"eu.*"}``, ``-1h``, ``now``, RFC 3339."""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from tsmesh_cli.errors import REFUSED, CliError

_SELECTOR = re.compile(r"\s*([A-Za-z_:][A-Za-z0-9_:.]*)?\s*(?:\{(.*)\})?\s*", re.DOTALL)
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d|w)")
_UNIT_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}
_UNIT_NS |= {"d": 86_400 * 10**9, "w": 7 * 86_400 * 10**9}


def is_selector(text: str) -> bool:
    """Whether ``text`` is a plain selector (else it is taken as PromQL)."""
    return parse_selector_or_none(text) is not None


def parse_selector_or_none(text: str) -> dict[str, Any] | None:
    """``{"metric", "matchers"}`` for a plain selector, ``None`` for anything else."""
    found = _SELECTOR.fullmatch(text)
    if found is None or not (found[1] or found[2]):
        return None
    matchers: list[dict[str, str]] = []
    body = (found[2] or "").strip()
    position = 0
    while position < len(body):
        matcher = _MATCHER.match(body, position)
        if matcher is None:
            return None
        value = matcher[3].encode().decode("unicode_escape") if "\\" in matcher[3] else matcher[3]
        matchers.append({"name": matcher[1], "op": matcher[2], "value": value})
        position = matcher.end()
    selector: dict[str, Any] = {"matchers": matchers}
    if found[1]:
        selector["metric"] = found[1]
    return selector


def parse_selector(text: str) -> dict[str, Any]:
    """A plain selector, or a refusal naming the expected form."""
    selector = parse_selector_or_none(text)
    if selector is None:
        raise CliError(f'not a selector: {text!r} (expected metric{{label="value",...}})', REFUSED)
    return selector


def parse_duration_ns(text: str) -> int:
    """``90s``, ``5m``, ``1h30m``, ``2d`` in nanoseconds."""
    text = text.strip()
    total, position = 0, 0
    for part in _DURATION.finditer(text):
        if part.start() != position:
            break
        total += int(float(part[1]) * _UNIT_NS[part[2]])
        position = part.end()
    if position != len(text) or not text:
        raise CliError(f"not a duration: {text!r} (e.g. 30s, 5m, 1h, 7d)", REFUSED)
    return total


def parse_time_ns(text: str, now_ns: int | None = None) -> int:
    """``now``, ``-1h`` (relative to now), an RFC 3339 date, or an integer (seconds, ms, us or ns by size)."""
    now = now_ns if now_ns is not None else time.time_ns()
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("-") and not text[1:].isdigit():
        return now - parse_duration_ns(text[1:])
    if text.lstrip("-").isdigit():
        value = int(text)
        for limit, scale in ((10**11, 10**9), (10**14, 10**6), (10**17, 10**3)):
            if abs(value) < limit:
                return value * scale
        return value
    try:
        return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 10**9)
    except ValueError:
        raise CliError(f"not a time: {text!r} (now, -1h, 2026-01-02T03:04:05Z or an epoch)", REFUSED) from None
