"""Properties of the wire walker in ``tsmesh_ingest.validation``: on any bytes it either refuses the
request with INVALID_ARGUMENT or gives exactly what parsing with upb (``WriteRequest.FromString``)
and checking each point gives; a request upb cannot parse is always refused."""

from __future__ import annotations

import struct

import hypothesis.strategies as st
from google.protobuf.message import DecodeError
from hypothesis import given, settings
from test_api_wire_path import NOW, NOW_NS, _oracle, _outcome, _wire
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.protowire import varint
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.series_id import SeriesIdCache
from tsmesh_ingest.validation import Validator

LIMITS = ValidationLimits(max_label_value_bytes=64, max_labels=4)
SETTINGS = settings(max_examples=200, deadline=None)
# A few identities, so that generated points often repeat one (the walk's cache hits).
METRICS = st.sampled_from(["m", "cpu", "x:y", "", "1bad", "m\x00"]) | st.text(max_size=8)
LABEL_NAMES = st.sampled_from(["a", "host", "_b", "1x", "a-b"]) | st.text(max_size=6)
LABEL_VALUES = st.sampled_from(["", "v", "a\x00b", "é", "\U0001f600", "x" * 65]) | st.text(max_size=8)
TIMESTAMPS = st.sampled_from([NOW_NS, NOW_NS - 1, NOW_NS + 10**12, 0, 2**56, 2**56 - 1]) | st.integers(
    -(2**63), 2**63 - 1
)
VALUES = st.floats() | st.sampled_from([0.0, -0.0, 1.0])
UNKNOWN_FIELDS = st.sampled_from([b"", b"\x28\x01", b"\x32\x00", b"\x3d" + bytes(4), b"\x41" + bytes(8)])


@st.composite
def point_bytes(draw: st.DrawFn) -> bytes:
    point = common_pb2.Point(
        metric=draw(METRICS),
        labels=draw(st.dictionaries(LABEL_NAMES, LABEL_VALUES, max_size=5)),
        timestamp_ns=draw(TIMESTAMPS),
        value=draw(VALUES),
    )
    return point.SerializeToString() + draw(UNKNOWN_FIELDS)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid request with one byte changed, inserted or removed: mostly still framed points."""
    wire = _wire(draw(st.lists(point_bytes(), min_size=1, max_size=4)))
    at = draw(st.integers(0, len(wire) - 1))
    byte = bytes([draw(st.integers(0, 255))])
    how = draw(st.sampled_from(["replace", "insert", "delete"]))
    if how == "replace":
        return wire[:at] + byte + wire[at + 1 :]
    if how == "insert":
        return wire[:at] + byte + wire[at:]
    return wire[:at] + wire[at + 1 :]


VALIDATOR = Validator(LIMITS, SeriesIdCache(), clock=lambda: NOW)


def _equivalent(wire: bytes) -> None:
    try:
        reference = ingest_pb2.WriteRequest.FromString(wire)
    except DecodeError:
        reference = None
    try:
        got = VALIDATOR.validate_request("t", wire)
    except InvalidArgument as exc:
        assert exc.field.startswith("points")
        if reference is not None:  # upb parsed it: only a request-wide limit may refuse it
            assert len(reference.points) > LIMITS.max_points_per_request
        return
    assert reference is not None, "the walker accepted bytes upb refuses"
    assert _outcome(got) == _oracle(VALIDATOR, LIMITS, "t", wire)


@given(st.lists(point_bytes(), max_size=5), UNKNOWN_FIELDS)
@SETTINGS
def test_the_walker_equals_parsing_then_checking_each_point(points: list[bytes], trailer: bytes) -> None:
    _equivalent(_wire(points, trailer=trailer))


@given(mutated())
@SETTINGS
def test_a_corrupted_request_is_refused_or_read_as_upb_reads_it(wire: bytes) -> None:
    _equivalent(wire)


@given(st.binary(max_size=200))
@SETTINGS
def test_any_bytes_are_refused_or_read_as_upb_reads_them(wire: bytes) -> None:
    _equivalent(wire)


@given(st.sampled_from(["metric", "name", "value"]), st.binary(min_size=1, max_size=4))
@SETTINGS
def test_a_string_that_is_not_utf8_is_refused_naming_its_point_and_field(field: str, raw: bytes) -> None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:
        return
    good = common_pb2.Point(metric="m", labels={"a": "v"}, timestamp_ns=NOW_NS, value=1.0).SerializeToString()
    metric, name, value = b"m", b"a", b"v"
    if field == "metric":
        metric += raw
    elif field == "name":
        name += raw
    else:
        value += raw
    entry = b"\x0a" + varint(len(name)) + name + b"\x12" + varint(len(value)) + value
    bad = b"\x0a" + varint(len(metric)) + metric + b"\x12" + varint(len(entry)) + entry
    bad += b"\x18" + varint(NOW_NS) + b"\x21" + struct.pack("<d", 1.0)
    try:
        VALIDATOR.validate_request("t", _wire([good, good, bad]))
    except InvalidArgument as exc:
        expected = {"metric": "points[2].metric", "name": "points[2].labels", "value": "points[2].labels.a"}
        assert (exc.field, str(exc)) == (expected[field], f"{expected[field]}: not valid UTF-8")
    else:
        raise AssertionError("a point with invalid UTF-8 was accepted")
