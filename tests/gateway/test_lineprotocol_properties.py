"""Properties of the line protocol parser: any text gives points or per-line errors (never another
exception), a line written by an encoder (below, escaping as InfluxDB's clients do) parses back to
what was encoded, and no point it makes holds what the store cannot (ADR 0210)."""

from __future__ import annotations

import math
import re

import hypothesis.strategies as st
from hypothesis import given, settings

from tsmesh_gateway.lineprotocol import LineError, ParsedLine, parse_body, parse_line

SETTINGS = settings(max_examples=300, deadline=None)
METRIC_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
# Line protocol's own characters, mixed into arbitrary text so that escapes are exercised.
SPECIAL = st.sampled_from([",", "=", " ", "\\", '"', "#", "\x00", "\t"])
TEXT = st.text(st.characters(codec="utf-8") | SPECIAL, max_size=20)
NAME = st.text(st.characters(codec="utf-8", exclude_characters='"\n') | SPECIAL.filter(lambda c: c != '"'), min_size=1)


def _escape(text: str, specials: str) -> str:
    return "".join("\\" + ch if ch in specials or ch == "\\" else ch for ch in text)


def encode(line: ParsedLine) -> str:
    """One line of InfluxDB line protocol (floats only, in ``repr``)."""
    series = _escape(line.measurement, ", ")
    for key, value in line.tags.items():
        series += f",{_escape(key, ',= ')}={_escape(value, ',= ')}"
    fields = ",".join(f"{_escape(key, ',= ')}={value!r}" for key, value in line.fields)
    return f"{series} {fields}" + ("" if line.timestamp is None else f" {line.timestamp}")


@st.composite
def lines(draw: st.DrawFn) -> ParsedLine:
    tags = draw(st.dictionaries(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True), NAME, max_size=3))
    fields = draw(st.lists(st.tuples(NAME, st.floats(allow_nan=False, allow_infinity=False)), min_size=1, max_size=3))
    timestamp = draw(st.none() | st.integers(-(2**63), 2**63 - 1))
    return ParsedLine(draw(NAME), tags, fields, timestamp)


@given(TEXT)
@SETTINGS
def test_any_line_parses_or_is_refused_with_a_line_error(line: str) -> None:
    try:
        parsed = parse_line(line)
    except LineError as exc:
        assert str(exc)
    else:
        assert parsed.measurement and parsed.fields


@given(st.lists(TEXT | st.just("m,t=v f=1 1700"), max_size=6).map("\n".join))
@SETTINGS
def test_any_body_gives_storable_points_and_numbered_errors(body: str) -> None:
    parsed = parse_body(body, precision="ns", bucket="b", now_ns=1_700_000_000_000_000_000)
    assert len(parsed.points) == len(parsed.line_of_point)
    assert all(1 <= number <= body.count("\n") + 1 for number, _ in parsed.errors)
    for point in parsed.points:
        assert METRIC_RE.fullmatch(point.metric)
        for name, value in point.labels.items():
            assert LABEL_RE.fullmatch(name) and "\x00" not in value
        assert math.isfinite(point.value)


@given(lines())
@SETTINGS
def test_an_encoded_line_parses_back(line: ParsedLine) -> None:
    text = encode(line)
    if any("\x00" in value for value in line.tags.values()):
        try:
            parse_line(text)
        except LineError as exc:
            assert "NUL" in str(exc)
        else:
            raise AssertionError("a NUL in a tag value was accepted")
        return
    assert parse_line(text) == line


@given(NAME, st.sampled_from(["\x00", "a\x00", "\x00b"]))
@SETTINGS
def test_a_nul_in_a_tag_value_refuses_the_line_and_names_the_tag(key: str, value: str) -> None:
    parsed = parse_body(f"m,{_escape(key, ',= ')}={value} f=1", precision="ns", bucket="b", now_ns=1)
    assert parsed.points == [] and len(parsed.errors) == 1
    assert "NUL" in parsed.errors[0][1] and repr(_escape(key, ",= ")) in parsed.errors[0][1]
