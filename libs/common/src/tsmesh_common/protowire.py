"""Protobuf wire-format pieces for code that writes messages by hand (hot paths that splice
pre-serialized fields instead of building message objects)."""

from __future__ import annotations


def varint(value: int) -> bytes:
    """``value`` (>= 0) as a base-128 varint: lengths and unsigned integer fields."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
