"""Bulk protobuf encoding of ``Bucket`` messages with numpy: no Python object per bucket.

A response of tens of thousands of buckets costs about 1 µs per ``buckets.add()``; here every
bucket of a response is encoded at once as the canonical wire bytes ``SeriesResult.buckets``
would have (``0x1a len [0x08 varint start] [0x11 f64 value] [0x18 varint count]``, zero scalars
omitted as proto3 does), and the response is parsed once by upb in C. The keys come from the
descriptors through :mod:`tsmesh_common.protowire`; the varint columns here are numpy's bulk form of
``protowire.varint`` (tests/query/test_wire.py checks both against upb).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from tsmesh.v1 import query_pb2

from tsmesh_common.protowire import key_of, tag_of, varint

_BUCKET = query_pb2.Bucket.DESCRIPTOR
_BUCKETS_TAG = tag_of(query_pb2.SeriesResult.DESCRIPTOR, "buckets")
_START_TAG = tag_of(_BUCKET, "start_ns")
_VALUE_TAG = tag_of(_BUCKET, "value")
_COUNT_TAG = tag_of(_BUCKET, "count")
_RESPONSE = query_pb2.QueryRangeResponse.DESCRIPTOR
_SERIES_KEY = key_of(_RESPONSE, "series")
_RESOLUTION_KEY = key_of(_RESPONSE, "resolution")
_THRESHOLDS = [np.uint64(1 << (7 * k)) for k in range(1, 10)]

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
Bools = npt.NDArray[np.bool_]
Keep = Bools | bool
# one block of columns of the record table: its bytes (a constant, one column or n x w) and which
# rows keep it (all, none, or a mask)
Block = tuple[int | npt.NDArray[np.uint8], Keep]


def _keep(mask: Bools) -> Keep:
    """``mask``, or a plain bool when it is uniform (the usual case: no per-row masking needed)."""
    if bool(mask.all()):
        return True
    return False if not bool(mask.any()) else mask


# Bits 0-55 of a uint64 spread to 8 bytes of 7 bits (byte k holds bits 7k..7k+6) in three halvings:
# 28-bit halves to 32-bit words, 14-bit quarters to 16-bit words, 7-bit eighths to bytes.
_LOW56 = np.uint64((1 << 56) - 1)
_SPREAD = [
    (np.uint64(4), np.uint64(0x000000000FFFFFFF), np.uint64(0x00FFFFFFF0000000)),
    (np.uint64(2), np.uint64(0x00003FFF00003FFF), np.uint64(0x0FFFC0000FFFC000)),
    (np.uint64(1), np.uint64(0x007F007F007F007F), np.uint64(0x3F803F803F803F80)),
]


def _septets(unsigned: npt.NDArray[np.uint64], width: int) -> npt.NDArray[np.uint8]:
    """The first ``min(width, 8)`` septets of each value, one per byte, with the continuation bit
    set on all but septet ``width - 1`` (an (n, min(width, 8)) view)."""
    low = unsigned & _LOW56
    moved = np.empty_like(low)
    for shift, keep, move in _SPREAD:
        np.bitwise_and(low, move, out=moved)
        low &= keep
        moved <<= shift
        low |= moved
    low |= np.uint64(sum(0x80 << (8 * k) for k in range(min(width - 1, 8))))
    return low.astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)[:, : min(width, 8)]


def _varint_blocks(values: I64, tag: int) -> list[Block]:
    """``tag`` and the canonical varint of each value, a value of zero omitted (proto3 scalars);
    only as many septet columns as the largest value needs."""
    unsigned = values.astype(np.uint64)
    top, bottom = int(unsigned.max()), int(unsigned.min())
    width = max(1, (top.bit_length() + 6) // 7)
    if bottom > 0 and (bottom.bit_length() + 6) // 7 == width:  # every value has the same length
        blocks: list[Block] = [(tag, True), (_septets(unsigned, width), True)]
        for k in range(8, width):  # septets 8 and 9 of values of 57 bits and more
            septet = ((unsigned >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
            blocks.append((septet | np.uint8(0x80) if k < width - 1 else septet, True))
        return blocks
    present = unsigned != 0
    length = np.ones(len(values), dtype=np.int8)
    for threshold in _THRESHOLDS[: width - 1]:
        length += unsigned >= threshold
    blocks = [(tag, _keep(present))]
    for k in range(width):
        septet = ((unsigned >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        septet |= (length > k + 1).astype(np.uint8) << np.uint8(7)
        blocks.append((septet, _keep(present & (length > k))))
    return blocks


def encode_buckets(starts: I64, values: F64, has_value: Bools, counts: I64) -> tuple[memoryview, npt.NDArray[np.intp]]:
    """The wire bytes of every bucket, concatenated (a view of a buffer no one else holds), and the
    end offset of each bucket record.

    A record is ``0x1a len [0x08 varint start] [0x11 f64 value] [0x18 varint count]``. The records
    are rows of a byte table built column by column (blocks of several columns written as one
    fixed-size field per row); when every row has the same shape (all values present, every start
    and every count of one varint length) the table is the answer as is, otherwise a keep mask drops
    the absent bytes of each row.
    """
    n = len(starts)
    if n == 0:
        return memoryview(b""), np.zeros(0, dtype=np.intp)
    has = _keep(has_value)
    blocks: list[Block] = [(_BUCKETS_TAG, True), (0, True)]  # the length byte is written below
    blocks += _varint_blocks(starts, _START_TAG)
    blocks += [(_VALUE_TAG, has), (values.astype("<f8").view(np.uint8).reshape(n, 8), has)]
    blocks += _varint_blocks(counts, _COUNT_TAG)
    blocks = [block for block in blocks if block[1] is not False]
    widths = [1 if isinstance(data, int) or data.ndim == 1 else data.shape[1] for data, _ in blocks]
    table = np.empty((n, sum(widths)), dtype=np.uint8)
    uniform = all(keep is True for _, keep in blocks)
    keep = None if uniform else np.empty(table.shape, dtype=np.bool_)
    at = 0
    for (data, rows), width in zip(blocks, widths, strict=True):
        if isinstance(data, int) or data.ndim == 1:
            table[:, at] = data
        else:  # one fixed-size field per row: far cheaper than a 2-D byte copy
            field = np.ndarray((n,), dtype=f"V{width}", buffer=table, offset=at, strides=(table.shape[1],))
            field[...] = data.view(f"V{width}")[:, 0]
        if keep is not None:
            keep[:, at : at + width] = rows if isinstance(rows, bool) else rows[:, None]
        at += width
    if keep is None:
        table[:, 1] = at - 2  # at most 31: a one-byte length
        return table.reshape(-1).data, np.arange(1, n + 1, dtype=np.intp) * at
    sizes = keep.sum(axis=1)
    table[:, 1] = (sizes - 2).astype(np.uint8)
    return table[keep].data, np.cumsum(sizes)


def encode_response(heads: Sequence[bytes], bodies: Sequence[bytes | memoryview], resolution: int) -> bytes:
    """A QueryRangeResponse from per-series ``SeriesResult`` prefixes (metric, labels) and bucket bytes."""
    parts: list[bytes | memoryview] = []
    for head, body in zip(heads, bodies, strict=True):
        parts += (_SERIES_KEY, varint(len(head) + len(body)), head, body)
    if resolution:
        parts += (_RESOLUTION_KEY, varint(resolution))
    return b"".join(parts)


def series_head(metric: str, labels: dict[str, str]) -> bytes:
    """The wire bytes of a SeriesResult without buckets (upb encodes the label map)."""
    return query_pb2.SeriesResult(metric=metric, labels=labels).SerializeToString()
