"""The hand-written WriteRequest bytes decode to the points they were given, in bounded requests."""

from __future__ import annotations

import pytest
from tsmesh.v1 import ingest_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.pointwire import RequestWriter, TooManyPoints, identity


def decoded(writer: RequestWriter) -> list[list[tuple[str, dict[str, str], int, float]]]:
    return [
        [(p.metric, dict(p.labels), p.timestamp_ns, p.value) for p in ingest_pb2.WriteRequest.FromString(r).points]
        for r in writer.requests()
    ]


def test_points_decode_as_written_in_requests_of_at_most_max_points() -> None:
    writer = RequestWriter(max_points=2, max_total=10)
    key = identity("cpu_usage", [("host", "a"), ("région", "ü")])
    for i, value in enumerate([0.0, -1.5, 2.0**60]):
        writer.add(key, 1_700_000_000_000_000_000 + i, value)
    writer.add(identity("m", []), -5, 1.0)
    labels = {"host": "a", "région": "ü"}
    assert decoded(writer) == [
        [("cpu_usage", labels, 1_700_000_000_000_000_000, 0.0), ("cpu_usage", labels, 1_700_000_000_000_000_001, -1.5)],
        [("cpu_usage", labels, 1_700_000_000_000_000_002, 2.0**60), ("m", {}, -5, 1.0)],
    ]


def test_more_points_than_the_cap_are_refused() -> None:
    writer = RequestWriter(max_points=10, max_total=3)
    key = identity("m", [])
    for i in range(3):
        writer.add(key, i, 1.0)
    with pytest.raises(TooManyPoints, match="at most 3 points"):
        writer.add(key, 4, 1.0)


def test_long_points_and_every_timestamp_range_round_trip() -> None:
    writer = RequestWriter(max_points=100, max_total=100)
    key = identity("m", [("long", "x" * 300)])
    stamps = [0, 1, 2**56 - 1, 2**56, 2**63 - 1, -(2**63), -1]
    for ts in stamps:
        writer.add(key, ts, -0.0)
    (request,) = decoded(writer)
    assert [p[2] for p in request] == stamps
    assert all(p[1] == {"long": "x" * 300} for p in request)


@pytest.mark.parametrize("ts", [2**63, -(2**63) - 1, 2**70])
def test_timestamps_outside_int64_are_refused(ts: int) -> None:
    with pytest.raises(InvalidArgument, match="outside the int64 range"):
        RequestWriter(max_points=10, max_total=10).add(identity("m", []), ts, 1.0)
