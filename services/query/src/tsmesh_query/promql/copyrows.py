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
    """An ``output`` for asyncpg's ``copy_from_query``: keeps the chunks until more than ``max_rows``
    rows have arrived, then drops them; ``rows`` is then RESOURCE_EXHAUSTED (``max_points``).

    The output never raises: an exception raised in it when the whole COPY had already arrived left
    asyncpg's connection waiting forever (the transaction's ROLLBACK never answered), so an
    over-limit query hung until its deadline. The rest of an over-limit COPY is read and dropped
    (memory stays bounded; the query's timeout bounds the time)."""

    def __init__(self, dtype: np.dtype, max_rows: int) -> None:
        self.dtype = dtype
        self.chunks: list[bytes] = []
        self.size = 0
        self.over = False
        self._max_bytes = HEADER_BYTES + TRAILER_BYTES + max_rows * dtype.itemsize

    async def __call__(self, chunk: bytes) -> None:
        if self.over:
            return
        self.size += len(chunk)
        if self.size > self._max_bytes:
            self.over = True
            self.chunks.clear()
            return
        self.chunks.append(chunk)

    def rows(self) -> np.ndarray:
        if self.over:
            raise ResourceExhausted("max_points", "")
        data = b"".join(self.chunks)
        if len(data) < HEADER_BYTES + TRAILER_BYTES:
            return np.zeros(0, dtype=self.dtype)
        body = memoryview(data)[HEADER_BYTES : len(data) - TRAILER_BYTES]
        return np.frombuffer(body, dtype=self.dtype, count=len(body) // self.dtype.itemsize)
