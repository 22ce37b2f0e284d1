"""Line protocol bodies into bounded requests: good lines stored, the bad ones' reasons bounded."""

from __future__ import annotations

import pytest
from tsmesh.v1 import ingest_pb2

from tsmesh_common.pointwire import RequestWriter, TooManyPoints
from tsmesh_gateway.push.lines import MAX_LINE_ERRORS, translate_lines


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
