"""``tsmesh_common.protowire`` agrees with upb both ways: what it encodes upb parses to the same
message, and what upb serializes it decodes field by field (property-based over generated messages)."""

from __future__ import annotations

import math
import struct

import hypothesis.strategies as st
import pytest
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from tsmesh.v1 import common_pb2, ingest_pb2, query_pb2

from tsmesh_common.protowire import (
    FIXED32,
    FIXED64,
    LEN,
    VARINT,
    double,
    fields,
    fixed64,
    key,
    key_of,
    length_delimited,
    read_double,
    read_fixed64,
    read_varint,
    tag,
    tag_of,
    varint,
)

SETTINGS = settings(max_examples=200, deadline=None)
INT64 = st.integers(-(2**63), 2**63 - 1)
UINT64 = st.integers(0, 2**64 - 1)
TEXT = st.text(max_size=12)


@st.composite
def points(draw: st.DrawFn) -> common_pb2.Point:
    return common_pb2.Point(
        metric=draw(TEXT),
        labels=draw(st.dictionaries(TEXT, TEXT, max_size=4)),
        timestamp_ns=draw(INT64),
        value=draw(st.floats()),
    )


def test_varint_matches_protobuf_uint_encoding() -> None:
    for value in (1, 127, 128, 300, 16_383, 16_384, 2**31, 2**63 - 1):
        # field 3 of Bucket is an int64 `count`: tag 0x18 then the varint
        encoded = query_pb2.Bucket(count=value).SerializeToString()
        assert encoded == b"\x18" + varint(value)
    assert varint(0) == b"\x00"


@given(UINT64)
@SETTINGS
def test_a_varint_reads_back_with_the_offset_after_it(value: int) -> None:
    encoded = b"\xff" + varint(value) + b"\x01"  # bytes around it are not read
    assert read_varint(encoded, 1) == (value, 1 + len(varint(value)))


@given(INT64)
@SETTINGS
def test_an_int64_is_its_twos_complement_varint_as_upb_writes_it(value: int) -> None:
    encoded = key_of(query_pb2.Bucket.DESCRIPTOR, "count") + varint(value % 2**64)
    assert query_pb2.Bucket.FromString(encoded).count == value
    if value:
        assert encoded == query_pb2.Bucket(count=value).SerializeToString()


def test_a_truncated_or_overlong_varint_is_refused() -> None:
    with pytest.raises(IndexError):
        read_varint(b"\x80\x80", 0)
    with pytest.raises(ValueError, match="longer than 10 bytes"):
        read_varint(b"\x80" * 10 + b"\x01", 0)


def test_keys_come_from_the_descriptors() -> None:
    point = common_pb2.Point.DESCRIPTOR
    assert [tag_of(point, name) for name in ("metric", "labels", "timestamp_ns", "value")] == [
        tag(1, LEN),
        tag(2, LEN),
        tag(3, VARINT),
        tag(4, FIXED64),
    ]
    assert tag_of(ingest_pb2.WriteRequest.DESCRIPTOR, "points") == 0x0A
    assert key_of(query_pb2.QueryRangeResponse.DESCRIPTOR, "resolution") == key(2, VARINT) == b"\x10"
    assert key(16, LEN) == b"\x82\x01"  # fields from 16 take a two-byte key


@given(points())
@SETTINGS
def test_a_point_written_by_hand_is_the_point_upb_parses(point: common_pb2.Point) -> None:
    entries = b"".join(
        length_delimited(2, length_delimited(1, name.encode()) + length_delimited(2, value.encode()))
        for name, value in point.labels.items()
    )
    wire = (
        length_delimited(1, point.metric.encode())
        + entries
        + key_of(common_pb2.Point.DESCRIPTOR, "timestamp_ns")
        + varint(point.timestamp_ns % 2**64)
        + key_of(common_pb2.Point.DESCRIPTOR, "value")
        + double(point.value)
    )
    parsed = common_pb2.Point.FromString(wire)
    assert (parsed.metric, dict(parsed.labels), parsed.timestamp_ns) == (
        point.metric,
        dict(point.labels),
        point.timestamp_ns,
    )
    assert struct.pack("<d", parsed.value) == struct.pack("<d", point.value)  # NaN payloads too


@given(points())
@SETTINGS
def test_fields_read_what_upb_serialized(point: common_pb2.Point) -> None:
    wire = point.SerializeToString()
    seen: dict[int, list[tuple[int, int | bytes]]] = {}
    for number, wire_type, value in fields(wire):
        seen.setdefault(number, []).append((wire_type, value))
    if point.metric:
        assert seen.pop(1) == [(LEN, point.metric.encode())]
    labels = {}
    for wire_type, entry in seen.pop(2, []):
        assert wire_type == LEN and isinstance(entry, bytes)
        pairs = {number: value for number, _, value in fields(entry)}
        labels[pairs.get(1, b"").decode()] = pairs.get(2, b"").decode()  # type: ignore[union-attr]
    assert labels == dict(point.labels)
    if point.timestamp_ns:
        assert seen.pop(3) == [(VARINT, point.timestamp_ns % 2**64)]
    if struct.pack("<d", point.value) != bytes(8):  # proto3 omits +0.0 only
        ((wire_type, raw),) = seen.pop(4)
        assert wire_type == FIXED64 and isinstance(raw, int)
        got = read_double(fixed64(raw), 0)
        assert got == point.value or (math.isnan(got) and math.isnan(point.value))
    assert seen == {}


@given(UINT64)
@SETTINGS
def test_fixed64_round_trips(value: int) -> None:
    assert read_fixed64(fixed64(value), 0) == value
    assert list(fields(key(5, FIXED64) + fixed64(value))) == [(5, FIXED64, value)]


def test_fields_refuse_what_upb_refuses() -> None:
    for malformed in (
        length_delimited(1, b"abc")[:-1],  # payload runs past the end
        key(4, FIXED64) + bytes(7),
        key(4, FIXED32) + bytes(3),
        bytes((tag(1, 3),)),  # a group
        bytes((tag(1, 7),)),  # no such wire type
    ):
        with pytest.raises((IndexError, ValueError)):
            list(fields(malformed))
        with pytest.raises(DecodeError):
            common_pb2.Point.FromString(malformed)
