"""The wire walk of a WriteRequest (``tsmesh_ingest.wirewalk``) as pure logic: cached identities are
hits with their framed bytes and tails, the rest misses, and anything that is not a plain sequence
of points is None (upb then decides: tests/ingest/test_validation_properties.py)."""

from __future__ import annotations

import struct

from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.protowire import varint
from tsmesh_ingest import wirewalk
from tsmesh_ingest.wirewalk import PAD, TAIL, bad_utf8_field, encodes_identity, identity_prefix, request_points, walk

TS = 1_700_000_000_000_000_000  # a 9-byte varint


def point(value: float = 1.5, ts: int = TS, **labels: str) -> bytes:
    return common_pb2.Point(metric="m", labels=labels, timestamp_ns=ts, value=value).SerializeToString()


def request(*points: bytes) -> bytes:
    return b"".join(b"\x0a" + varint(len(p)) + p for p in points)


def test_the_walk_reads_single_byte_keys() -> None:
    assert max(wirewalk.POINTS_TAG, wirewalk.TS_TAG, wirewalk.VALUE_TAG) < 0x80
    assert len(point()) - len(common_pb2.Point(metric="m").SerializeToString()) == TAIL


def test_cached_identities_are_hits_and_the_others_misses_in_order() -> None:
    hit, zero, miss = point(2.0, host="a"), point(0.0, host="a"), point(3.0, host="b")
    key = identity_prefix(hit)
    assert key == common_pb2.Point(metric="m", labels={"host": "a"}).SerializeToString()
    walked = walk(PAD + request(hit, miss, zero), {key: 42}, 10)
    assert walked is not None
    assert walked.series_ids == [42, 42]
    assert walked.framed == [varint(len(hit)) + hit, varint(len(zero)) + zero]
    assert walked.tails[0] == hit[-TAIL:]
    assert walked.tails[1] == zero[-10:] + b"\x21" + bytes(8)  # 0.0 is not written: the walk adds it
    assert walked.misses == [(1, miss)]
    shaped, ts, non_finite = wirewalk.tails(walked.tails)
    assert shaped.tolist() == [True, True] and ts.tolist() == [TS, TS] and non_finite.tolist() == [False, False]


def test_a_long_point_takes_a_multibyte_length() -> None:
    big = point(host="x" * 300)
    walked = walk(PAD + request(big), {}, 10)
    assert walked is not None and walked.misses == [(0, big)]
    assert wirewalk.unframe(varint(len(big)) + big) == big


def test_what_is_not_a_plain_sequence_of_points_is_none() -> None:
    good = request(point())
    assert walk(PAD + good + b"\x10\x01", {}, 10) is None  # another field
    assert walk(PAD + good + good, {}, 1) is None  # more points than the limit
    assert walk(PAD + good[:-1], {}, 10) is None  # truncated
    assert walk(PAD + b"\x0a" + b"\xff" * 11, {}, 10) is None  # a length varint longer than 10 bytes


def test_the_identity_prefix_needs_a_nine_byte_timestamp_tail() -> None:
    assert identity_prefix(point(ts=5)) is None
    assert identity_prefix(point(0.0)) == identity_prefix(point(7.0))
    assert identity_prefix(point() + b"\x28\x01") is None  # an unknown field after the tail


def test_an_identity_is_encoded_up_to_the_order_of_its_label_entries() -> None:
    labels = (("a", "1"), ("b", "2"))
    entries = [common_pb2.Point(labels=dict([pair])).SerializeToString() for pair in labels]
    head = common_pb2.Point(metric="m").SerializeToString()
    assert encodes_identity(head + entries[0] + entries[1], "m", labels)
    assert encodes_identity(head + entries[1] + entries[0], "m", labels)
    assert not encodes_identity(head + entries[0], "m", labels)
    assert not encodes_identity(head + entries[0] + entries[0], "m", labels)


def test_invalid_utf8_is_named_by_its_field() -> None:
    def raw_point(metric: bytes, name: bytes, value: bytes) -> bytes:
        entry = b"\x0a" + varint(len(name)) + name + b"\x12" + varint(len(value)) + value
        return b"\x0a" + varint(len(metric)) + metric + b"\x12" + varint(len(entry)) + entry

    assert bad_utf8_field(raw_point(b"m\xff", b"a", b"v")) == "metric"
    assert bad_utf8_field(raw_point(b"m", b"a\xff", b"v")) == "labels"
    assert bad_utf8_field(raw_point(b"m", b"host", b"\xc3")) == "labels.host"
    assert bad_utf8_field(raw_point(b"m", b"a", b"v") + b"\x18" + struct.pack("<d", 1.0)[:3]) is None


def test_request_points_stop_where_the_request_is_malformed() -> None:
    one, two = point(host="a"), point(host="b")
    assert list(request_points(request(one, two))) == [one, two]
    assert list(request_points(request(one) + b"\x0a\x05ab")) == [one]
    parsed = ingest_pb2.WriteRequest.FromString(request(one, two))
    assert [p.SerializeToString() for p in parsed.points] == [one, two]
