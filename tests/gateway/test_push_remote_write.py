"""Prometheus remote_write 1.0 and 2.0 bodies into points: negotiation, snappy, stale markers."""

from __future__ import annotations

import struct

import cramjam
import pytest
from prometheus import remote_pb2, types_pb2
from prometheus.write.v2 import types_pb2 as v2
from tsmesh.v1 import ingest_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.pointwire import IdentityCache, RequestWriter
from tsmesh_gateway.http_errors import HttpError
from tsmesh_gateway.push.remote_write import STALE_NAN_BITS, Version, inflate, is_stale, negotiate, translate

STALE = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
MS = 1_700_000_000_000


def stored(version: Version, data: bytes) -> tuple[list[tuple[str, dict[str, str], int, float]], int, int, list[str]]:
    writer = RequestWriter(max_points=10, max_total=100)
    outcome = translate(version, data, writer)
    pts = [
        (p.metric, dict(p.labels), p.timestamp_ns, p.value)
        for raw in writer.requests()
        for p in ingest_pb2.WriteRequest.FromString(raw).points
    ]
    return pts, outcome.stale, outcome.rejected, outcome.messages


@pytest.mark.parametrize(
    ("content_type", "version"),
    [
        (None, Version.V1),
        ("application/x-protobuf", Version.V1),
        ("application/x-protobuf;proto=prometheus.WriteRequest", Version.V1),
        ("application/x-protobuf; proto=io.prometheus.write.v2.Request", Version.V2),
    ],
)
def test_versions_come_from_the_content_type(content_type: str | None, version: Version) -> None:
    assert negotiate(content_type) is version


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-protobuf;proto=io.prometheus.write.v3.Request"]
)
def test_other_content_types_are_415(content_type: str) -> None:
    with pytest.raises(HttpError) as caught:
        negotiate(content_type)
    assert caught.value.status == 415
    assert "content-type" in caught.value.details["field"]


def test_v1_samples_become_points_and_stale_markers_are_dropped() -> None:
    request = remote_pb2.WriteRequest(
        timeseries=[
            types_pb2.TimeSeries(
                labels=[
                    types_pb2.Label(name="__name__", value="up"),
                    types_pb2.Label(name="job", value="node"),
                    types_pb2.Label(name="empty", value=""),
                ],
                samples=[types_pb2.Sample(value=1.0, timestamp=MS), types_pb2.Sample(value=STALE, timestamp=MS + 1)],
            ),
            types_pb2.TimeSeries(
                labels=[types_pb2.Label(name="job", value="x")], samples=[types_pb2.Sample(value=2.0)]
            ),
        ]
    )
    body = bytes(cramjam.snappy.compress_raw(request.SerializeToString()))
    pts, stale, rejected, messages = stored(Version.V1, inflate(body, 1 << 20))
    assert pts == [("up", {"job": "node"}, MS * 1_000_000, 1.0)]
    assert (stale, rejected) == (1, 1)
    assert "__name__" in messages[0]


def test_v2_symbols_resolve_to_labels_and_histograms_are_refused() -> None:
    request = v2.Request(
        symbols=["", "__name__", "http_requests_total", "code", "200"],
        timeseries=[
            v2.TimeSeries(labels_refs=[1, 2, 3, 4], samples=[v2.Sample(value=5.0, timestamp=MS)]),
            v2.TimeSeries(labels_refs=[1, 2], histograms=[v2.Histogram()]),
        ],
    )
    pts, _stale, rejected, messages = stored(Version.V2, request.SerializeToString())
    assert pts == [("http_requests_total", {"code": "200"}, MS * 1_000_000, 5.0)]
    assert rejected == 1
    assert "native histogram" in messages[0]


def test_a_v2_reference_beyond_the_symbols_is_invalid() -> None:
    request = v2.Request(symbols=["", "__name__"], timeseries=[v2.TimeSeries(labels_refs=[1, 7])])
    with pytest.raises(InvalidArgument, match="beyond the 2 symbols"):
        stored(Version.V2, request.SerializeToString())


def test_truncated_protobuf_names_the_fault() -> None:
    data = remote_pb2.WriteRequest(
        timeseries=[types_pb2.TimeSeries(labels=[types_pb2.Label(name="__name__", value="up")])]
    ).SerializeToString()
    with pytest.raises(InvalidArgument, match="truncated or corrupt protobuf"):
        stored(Version.V1, data[:-3])


def test_corrupt_snappy_is_400_and_an_oversized_declared_length_413() -> None:
    with pytest.raises(HttpError) as corrupt:
        inflate(b"\x05garbage", 1 << 20)
    assert (corrupt.value.status, "snappy" in corrupt.value.message) == (400, True)
    with pytest.raises(HttpError) as large:
        inflate(bytes(cramjam.snappy.compress_raw(bytes(2048))), 1024)
    assert large.value.status == 413


def test_only_the_staleness_nan_is_stale() -> None:
    assert is_stale(STALE)
    assert not is_stale(float("nan"))
    assert not is_stale(1.0)


def test_identities_kept_across_bodies_give_the_same_points() -> None:
    request = remote_pb2.WriteRequest(
        timeseries=[
            types_pb2.TimeSeries(
                labels=[types_pb2.Label(name="__name__", value=f"m{i % 3}"), types_pb2.Label(name="i", value=str(i))],
                samples=[types_pb2.Sample(value=float(i), timestamp=MS)],
            )
            for i in range(6)
        ]
        + [types_pb2.TimeSeries(labels=[types_pb2.Label(name="job", value="x")], samples=[types_pb2.Sample()])]
    ).SerializeToString()
    cache = IdentityCache(max_entries=4)
    runs = []
    for _ in range(3):
        writer = RequestWriter(max_points=10, max_total=100)
        outcome = translate(Version.V1, request, writer, cache)
        runs.append(([ingest_pb2.WriteRequest.FromString(r) for r in writer.requests()], outcome.rejected))
    assert runs[0] == runs[1] == runs[2]
    assert runs[0][1] == 1
    assert [dict(p.labels)["i"] for p in runs[0][0][0].points] == [str(i) for i in range(6)]
