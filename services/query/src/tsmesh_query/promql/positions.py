"""Where in the query text a parse error is, as Prometheus names it (``line:column``, bytes, from 1).

``promql-parser`` reports no offsets, so a position is given only where the message pins it down
without doubt: the end of the text for errors of unexpected end of input; the one call of an
unknown function; the one bad duration or number token; the one unexpected character outside
quoted strings. Otherwise None, and the message goes without one.
"""

from __future__ import annotations

import re

_END = re.compile(r"unexpected end of input|unclosed left (parenthesis|bracket)")
_UNKNOWN_FUNCTION = re.compile(r"unknown function with name '([A-Za-z_][A-Za-z0-9_]*)'")
_BAD_DURATION = re.compile(r"bad (?:number or )?duration syntax: (\S+)$")
_UNEXPECTED_CHAR = re.compile(r"unexpected character[^:]*: '(.)'$")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')


def _line_col(text: str, offset: int) -> str:
    before = text[:offset].encode()
    line, column = before.count(b"\n") + 1, len(before) - before.rfind(b"\n")
    return f"{line}:{column}"


def _outside_strings(text: str) -> str:
    """``text`` with every quoted string blanked (same length), so a search cannot land inside one."""
    return _STRING.sub(lambda m: " " * len(m.group(0)), text)


def _only(pattern: str, text: str) -> int | None:
    found = [m.start() for m in re.finditer(pattern, _outside_strings(text))]
    return found[0] if len(found) == 1 else None


def parse_error(text: str, message: str) -> str:
    """Prometheus's shape: ``"1:16: parse error: unclosed left parenthesis"``; without the position
    when the parser's message does not pin it down."""
    if message == "invalid promql query" and re.search(
        r"([-+*/%^=<>!,(]|\b(by|without|offset|bool|on|ignoring))\s*$", text
    ):
        message = "unexpected end of input"  # a dangling operator or keyword: Prometheus's words
    at = _offset(text, message)
    return f"parse error: {message}" if at is None else f"{_line_col(text, at)}: parse error: {message}"


def _offset(text: str, message: str) -> int | None:
    if _END.search(message):
        return len(text)
    if m := _UNKNOWN_FUNCTION.search(message):
        return _only(rf"(?<![A-Za-z0-9_:]){re.escape(m.group(1))}\s*\(", text)
    if m := _BAD_DURATION.search(message):
        return _only(rf"(?<![A-Za-z0-9_.]){re.escape(m.group(1))}(?![A-Za-z0-9_.])", text)
    if m := _UNEXPECTED_CHAR.search(message):
        return _only(re.escape(m.group(1)), text)
    if message.startswith("unterminated quoted string"):
        return _only("[\"'`]", text)
    return None
