"""The output of a binary ``COPY`` as a numpy array of fixed-size rows, with no Python object per row.

A binary COPY is a 19-byte header (signature, flags, extension length), tuples, and a 2-byte
trailer; with fixed-width fields every tuple has the same size, so numpy reads them in one step.
"""

from __future__ import annotations

import numpy as np

from tsmesh_common.errors import ResourceExhausted

HEADER_BYTES = 19
TRAILER_BYTES = 2


class CopyRows:
    """An ``output`` for asyncpg's ``copy_from_query``: keeps the chunks, RESOURCE_EXHAUSTED
    (``max_points``) as soon as more than ``max_rows`` rows have arrived."""

    def __init__(self, dtype: np.dtype, max_rows: int) -> None:
        self.dtype = dtype
        self.chunks: list[bytes] = []
        self.size = 0
        self._max_bytes = HEADER_BYTES + TRAILER_BYTES + max_rows * dtype.itemsize

    async def __call__(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._max_bytes:
            raise ResourceExhausted("max_points", "")
        self.chunks.append(chunk)

    def rows(self) -> np.ndarray:
        data = b"".join(self.chunks)
        if len(data) < HEADER_BYTES + TRAILER_BYTES:
            return np.zeros(0, dtype=self.dtype)
        body = memoryview(data)[HEADER_BYTES : len(data) - TRAILER_BYTES]
        return np.frombuffer(body, dtype=self.dtype, count=len(body) // self.dtype.itemsize)
