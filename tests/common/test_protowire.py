"""The hand-written varint matches protobuf's own encoding."""

from __future__ import annotations

from tsmesh.v1 import query_pb2

from tsmesh_common.protowire import varint


def test_varint_matches_protobuf_uint_encoding() -> None:
    for value in (1, 127, 128, 300, 16_383, 16_384, 2**31, 2**63 - 1):
        # field 3 of Bucket is an int64 `count`: tag 0x18 then the varint
        encoded = query_pb2.Bucket(count=value).SerializeToString()
        assert encoded == b"\x18" + varint(value)
    assert varint(0) == b"\x00"
