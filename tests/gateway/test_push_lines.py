"""Line protocol bodies into bounded requests: good lines stored, the bad ones' reasons bounded."""

from __future__ import annotations

import random

import pytest
from tsmesh.v1 import ingest_pb2

from tsmesh_common.pointwire import RequestWriter, TooManyPoints
from tsmesh_gateway.lineprotocol import parse_body
from tsmesh_gateway.push.lines import MAX_LINE_ERRORS, LineSeriesCache, translate_lines


def test_points_and_their_lines_with_the_bucket_label() -> None:
    writer = RequestWriter(max_points=2, max_total=100)
    body = b"cpu,host=a usage=1.5,idle=2i 1700000000\n\nbadline\nmem,host=b used=3 1700000001\n"
    outcome = translate_lines(body, scale=10**9, bucket="telegraf", writer=writer)
    pts = [
        (p.metric, dict(p.labels), p.timestamp_ns, p.value)
        for raw in writer.requests()
        for p in ingest_pb2.WriteRequest.FromString(raw).points
    ]
    assert pts == [
        ("cpu_usage", {"bucket": "telegraf", "host": "a"}, 1_700_000_000 * 10**9, 1.5),
        ("cpu_idle", {"bucket": "telegraf", "host": "a"}, 1_700_000_000 * 10**9, 2.0),
        ("mem_used", {"bucket": "telegraf", "host": "b"}, 1_700_000_001 * 10**9, 3.0),
    ]
    assert list(outcome.line_of_point) == [1, 1, 4]
    assert outcome.errors == [(3, "missing fields")]


def test_bad_lines_are_all_counted_but_only_the_first_reasons_kept() -> None:
    outcome = translate_lines(b"x\n" * 5000, scale=1, bucket="b", writer=RequestWriter(10, 10))
    assert outcome.bad_lines == 5000
    assert len(outcome.errors) == MAX_LINE_ERRORS


def test_a_body_with_more_points_than_the_cap_is_refused() -> None:
    with pytest.raises(TooManyPoints):
        translate_lines(b"m v=1\n" * 11, scale=1, bucket="b", writer=RequestWriter(10, 10))


def test_a_body_not_utf8_names_its_line() -> None:
    outcome = translate_lines(b"m v=1\nm\xff v=2\n", scale=1, bucket="b", writer=RequestWriter(10, 10))
    assert outcome.errors == [(2, "not UTF-8")]


EDGES = [
    "m v=1e999 1",
    "m v=9223372036854775807i,w=9223372036854775808i 1",
    "m v=-9223372036854775809i 1",
    "m v=1 99999999999999999999",
    "m v=1 -1",
    "m,t=1 v=1",
    "m v=1  1",
    "m v= 1",
    "m =1",
    "m v==1",
    "m, v=1",
    "m v=1,",
    "m v=nan",
    "m v=inf",
    "m v=1_0",
    "m v=.5,w=1.,x=-2E3 3",
    "m,a=b,a=c v=1",
    "2m,9x=y v=1",
]


def _random_line(rng: random.Random) -> str:
    pieces = [
        "cpu",
        ",",
        "host",
        "=",
        "a",
        " ",
        "usage",
        "1.5",
        "2i",
        "-3",
        "1e999",
        "12u",
        "t",
        '"s"',
        "\\ ",
        "\\,",
        "x",
    ]
    pieces += ["=", ",", " ", " ", "1700000000000000000", "99999999999999999999", ".5", "1.", "9223372036854775808i"]
    return "".join(rng.choice(pieces) for _ in range(rng.randint(1, 12)))


@pytest.mark.parametrize("seed", range(5))
def test_the_common_line_path_writes_what_the_general_parser_does(seed: int) -> None:
    rng = random.Random(seed)
    templates = [
        "cpu,host=h{i},region=eu usage={v},idle={n}i {ts}",
        "mem used={v} {ts}",
        "disk,path=/x free={n}i",
        "net,if=eth{i} rx={v},tx={v}",
    ]
    lines = []
    for i in range(400):
        if rng.random() < 0.5:
            template = rng.choice(templates)
            lines.append(template.format(i=i % 7, v=rng.uniform(-1e6, 1e6), n=rng.randint(-(2**40), 2**40), ts=i))
        else:
            lines.append(_random_line(rng))
    lines += EDGES
    rng.shuffle(lines)
    text = "\n".join(lines)
    reference = parse_body(text, precision="ns", bucket="b", now_ns=5)
    want = [(p.metric, dict(p.labels), p.timestamp_ns, p.value) for p in reference.points]
    small = LineSeriesCache(max_entries=3)
    warmed = LineSeriesCache()
    translate_lines(text.encode(), scale=1, bucket="other", writer=RequestWriter(10_000, 10_000), cache=warmed)
    for cache in (None, small, small, warmed):
        writer = RequestWriter(max_points=10_000, max_total=10_000)
        outcome = translate_lines(text.encode(), scale=1, bucket="b", writer=writer, now_ns=5, cache=cache)
        got = [
            (p.metric, dict(p.labels), p.timestamp_ns, p.value)
            for raw in writer.requests()
            for p in ingest_pb2.WriteRequest.FromString(raw).points
        ]
        assert got == want
        assert list(outcome.line_of_point) == reference.line_of_point
        assert outcome.errors == reference.errors[:MAX_LINE_ERRORS]
