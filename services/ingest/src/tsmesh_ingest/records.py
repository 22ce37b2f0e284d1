"""Decoding and checking Kafka records before they reach the database.

A record that cannot be decoded, lacks a tenant, or carries a series id that is not the hash of its
own (tenant, metric, labels) is poison: it goes to the dead-letter topic with the reason. The last
check is what stops a forged record from writing into another tenant's series.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from google.protobuf.message import DecodeError
from tsmesh.v1 import common_pb2

from tsmesh_ingest.series_id import series_id, signed_array
from tsmesh_ingest.store import Item


@dataclass(frozen=True)
class Poison:
    """A record refused before storage: its bytes, headers and why."""

    value: bytes
    headers: Sequence[tuple[str, bytes]]
    code: str
    reason: str


class RecordDecoder:
    """Turns record values into :class:`Item` or :class:`Poison`, remembering verified ids.

    Steady state costs set arithmetic per record (ids already verified for the record's tenant);
    only ids never seen are hashed from their point.
    """

    def __init__(self, max_verified: int = 2_000_000) -> None:
        self._owners: dict[int, str] = {}
        self._by_tenant: dict[str, set[int]] = {}
        self._max = max_verified

    def decode(self, value: bytes | None, headers: Sequence[tuple[str, bytes]] = ()) -> Item | Poison:
        raw = value or b""
        try:
            batch = common_pb2.PointBatch.FromString(raw)
        except DecodeError as exc:
            return Poison(raw, headers, "undecodable", f"not a tsmesh.v1.PointBatch: {exc}")
        if not batch.tenant_id:
            return Poison(raw, headers, "malformed", "tenant_id is empty")
        if len(batch.points) != len(batch.series_ids):
            return Poison(raw, headers, "malformed", "points and series_ids differ in length")
        problem = self._verify(batch)
        if problem is not None:
            return Poison(raw, headers, "series_id_mismatch", problem)
        return Item(batch.tenant_id, batch, signed_array(batch.series_ids), raw, headers)

    def _verify(self, batch: common_pb2.PointBatch) -> str | None:
        tenant = batch.tenant_id
        ids = batch.series_ids
        mine = self._by_tenant.get(tenant)
        if mine is not None and mine.issuperset(ids):  # steady state: no set is built
            return None
        unseen = set(ids) if mine is None else set(ids) - mine
        owners = self._owners
        fresh: list[int] = []
        for i, sid in enumerate(ids):
            if sid not in unseen:
                continue
            unseen.discard(sid)
            point = batch.points[i]
            if owners.get(sid, tenant) != tenant or series_id(tenant, point.metric, point.labels.items()) != sid:
                return f"point {i}: series id {sid} is not the id of its metric and labels for tenant {tenant!r}"
            fresh.append(sid)
        if len(owners) + len(fresh) > self._max:
            owners.clear()
            self._by_tenant.clear()
        for sid in fresh:
            owners[sid] = tenant
        self._by_tenant.setdefault(tenant, set()).update(fresh)
        return None


def split(decoded: Sequence[Item | Poison]) -> tuple[list[Item], list[Poison]]:
    items = [d for d in decoded if isinstance(d, Item)]
    poison = [d for d in decoded if isinstance(d, Poison)]
    return items, poison
