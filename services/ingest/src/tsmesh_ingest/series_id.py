"""Stable 64-bit series ids: BLAKE2b-64 of (tenant, metric, sorted labels). See docs/series-id.md."""

from __future__ import annotations

import hashlib
import struct
from array import array
from collections import OrderedDict
from collections.abc import Iterable

_LEN = struct.Struct(">I")
_U64 = 1 << 64
_I63 = 1 << 63

LabelItems = tuple[tuple[str, str], ...]


def _field(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _LEN.pack(len(raw)) + raw


def series_id(tenant_id: str, metric: str, labels: Iterable[tuple[str, str]]) -> int:
    """The unsigned 64-bit id: BLAKE2b (8-byte digest, personalization ``tsmesh.series.v1``) over
    length-prefixed UTF-8 fields tenant, metric, then each label name and value sorted by name."""
    parts = [_field(tenant_id), _field(metric)]
    for name, value in sorted(labels):
        parts.append(_field(name))
        parts.append(_field(value))
    digest = hashlib.blake2b(b"".join(parts), digest_size=8, person=b"tsmesh.series.v1").digest()
    return int.from_bytes(digest, "big")


def to_signed(unsigned: int) -> int:
    """The value stored in PostgreSQL's signed bigint (two's complement of the same 64 bits)."""
    return unsigned - _U64 if unsigned >= _I63 else unsigned


def to_unsigned(signed: int) -> int:
    """The wire (fixed64) form of a stored id."""
    return signed + _U64 if signed < 0 else signed


def signed_array(unsigned: Iterable[int]) -> array[int]:
    """Reinterpret many unsigned ids as signed in one C-level pass (no per-id Python arithmetic)."""
    return array("q", array("Q", unsigned).tobytes())


class SeriesIdCache:
    """Bounded map (tenant, metric, labels as given) -> id for one process; misses hash and insert."""

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._max = max_entries
        self._ids: OrderedDict[tuple[str, str, LabelItems], int] = OrderedDict()
        self._by_encoding: dict[str, dict[bytes, int]] = {}
        self._encoded = 0
        self.misses = 0

    def encodings(self, tenant_id: str) -> dict[bytes, int]:
        """The tenant's map: canonical wire encoding of (metric, labels) -> id (validation's fast
        path). Keys are bytes and values ints, so the garbage collector never scans these dicts."""
        found = self._by_encoding.get(tenant_id)
        if found is None:
            found = self._by_encoding[tenant_id] = {}
        return found

    def remember(self, tenant_id: str, encoding: bytes, sid: int) -> None:
        """Record ``encoding`` -> ``sid`` (bounded like the main map: all cleared when full)."""
        if self._encoded >= self._max:
            for mapping in self._by_encoding.values():
                mapping.clear()
            self._encoded = 0
        self.misses += 1
        self._encoded += 1
        self.encodings(tenant_id)[encoding] = sid

    def peek(self, tenant_id: str, metric: str, labels: LabelItems) -> int | None:
        """The cached id, or None (the caller validates the identity before calling :meth:`get`)."""
        return self._ids.get((tenant_id, metric, labels))

    def get(self, tenant_id: str, metric: str, labels: LabelItems) -> int:
        key = (tenant_id, metric, labels)
        found = self._ids.get(key)
        if found is not None:
            return found
        self.misses += 1
        found = series_id(tenant_id, metric, labels)
        self._ids[key] = found
        if len(self._ids) > self._max:
            self._ids.popitem(last=False)
        return found

    def __len__(self) -> int:
        return len(self._ids)
