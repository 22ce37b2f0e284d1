"""Protobuf wire format, both ways, for hot paths that read or write message bytes by hand (splicing
pre-serialized fields, or walking a request without parsing it) instead of building message objects.

A field is a *key* (``field number << 3 | wire type``, as a varint) then its value: a varint
(:data:`VARINT`), 8 little-endian bytes (:data:`FIXED64`: ``double``, ``fixed64``), a length varint
and that many bytes (:data:`LEN`: strings, bytes, messages, map entries) or 4 bytes (:data:`FIXED32`).
Keys are derived from the generated descriptors (:func:`tag_of`), so no code writes a field's number
as a literal. upb parses and serializes whole messages; this module is for the bytes in between.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from google.protobuf.descriptor import Descriptor, FieldDescriptor

VARINT = 0
FIXED64 = 1
LEN = 2
FIXED32 = 5
MAX_VARINT_BYTES = 10
_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_WIRE_TYPE_OF = {
    FieldDescriptor.TYPE_DOUBLE: FIXED64,
    FieldDescriptor.TYPE_FIXED64: FIXED64,
    FieldDescriptor.TYPE_SFIXED64: FIXED64,
    FieldDescriptor.TYPE_FLOAT: FIXED32,
    FieldDescriptor.TYPE_FIXED32: FIXED32,
    FieldDescriptor.TYPE_SFIXED32: FIXED32,
    FieldDescriptor.TYPE_STRING: LEN,
    FieldDescriptor.TYPE_BYTES: LEN,
    FieldDescriptor.TYPE_MESSAGE: LEN,
}


# -- keys ------------------------------------------------------------------------------------------


def tag(number: int, wire_type: int) -> int:
    """The key of field ``number`` with ``wire_type`` (a one-byte varint for fields 1 to 15)."""
    return number << 3 | wire_type


def tag_of(message: Descriptor, field_name: str) -> int:
    """The key of ``message``'s field ``field_name`` as serialized (packed repeated scalars aside),
    e.g. ``tag_of(Point.DESCRIPTOR, "timestamp_ns") == 0x18``."""
    fd = message.fields_by_name[field_name]
    return tag(fd.number, _WIRE_TYPE_OF.get(fd.type, VARINT))


def key(number: int, wire_type: int) -> bytes:
    """The key of field ``number`` with ``wire_type`` as bytes."""
    return varint(tag(number, wire_type))


def key_of(message: Descriptor, field_name: str) -> bytes:
    """:func:`tag_of` as the bytes that start the field."""
    return varint(tag_of(message, field_name))


# -- encoders --------------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a base-128 varint: lengths and unsigned integer fields (an int64 below 0
    is written as its two's complement, ``value % 2**64``: 10 bytes)."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field ``number`` holding ``payload`` (a string, bytes or a serialized message)."""
    return varint(tag(number, LEN)) + varint(len(payload)) + payload


def double(value: float) -> bytes:
    """``value`` as the 8 little-endian bytes of a ``double`` field (without its key)."""
    return _DOUBLE.pack(value)


def fixed64(value: int) -> bytes:
    """``value`` (0 to 2**64 - 1) as the 8 little-endian bytes of a ``fixed64`` field (without its key)."""
    return _FIXED64.pack(value)


# -- decoders --------------------------------------------------------------------------------------


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint starting at ``data[pos]`` and the offset after it (IndexError when truncated,
    ValueError when longer than 10 bytes)."""
    value = 0
    for shift in range(0, 7 * MAX_VARINT_BYTES, 7):
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
    raise ValueError(f"varint longer than {MAX_VARINT_BYTES} bytes")


def read_double(data: bytes, pos: int) -> float:
    """The ``double`` in ``data[pos : pos + 8]`` (struct.error when fewer than 8 bytes remain)."""
    return float(_DOUBLE.unpack_from(data, pos)[0])


def read_fixed64(data: bytes, pos: int) -> int:
    """The ``fixed64`` in ``data[pos : pos + 8]`` (struct.error when fewer than 8 bytes remain)."""
    return int(_FIXED64.unpack_from(data, pos)[0])


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of a serialized message, in order: the value
    is the payload's bytes for :data:`LEN`, else the unsigned integer the field's bytes hold (a
    ``double`` is ``read_double`` of them). IndexError when a field runs past the end, ValueError
    for a group or an unknown wire type, or a varint longer than 10 bytes."""
    pos, n = 0, len(data)
    while pos < n:
        field_key, pos = read_varint(data, pos)
        number, wire_type = field_key >> 3, field_key & 7
        value: int | bytes
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == LEN:
            size, pos = read_varint(data, pos)
            end = pos + size
            if end > n:
                raise IndexError("field runs past the end")
            value, pos = data[pos:end], end
        elif wire_type in (FIXED64, FIXED32):
            end = pos + (8 if wire_type == FIXED64 else 4)
            if end > n:
                raise IndexError("field runs past the end")
            value, pos = int.from_bytes(data[pos:end], "little"), end
        else:
            raise ValueError(f"wire type {wire_type}")
        yield number, wire_type, value
