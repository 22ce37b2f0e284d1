"""One writer transaction: series registry upserts, points by binary COPY, pending rollup ranges.

Fast path: the rows are COPYed (binary) straight into ``ts.points`` inside a savepoint. When the
batch overlaps stored rows (a redelivery, a rewrite) or repeats a (series, ts) within itself, the
unique index refuses the COPY; the savepoint rolls back and the conflict-tolerant path COPYs into a
session temp table and merges with ``INSERT .. SELECT DISTINCT ON .. ON CONFLICT DO UPDATE``
(last write wins, in record order). Either way the pending rollup ranges of the batch, one per
(series, hour), go in by COPY in the same transaction.
"""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import count, repeat
from typing import Any

import asyncpg
import orjson
from tsmesh.v1 import common_pb2

from tsmesh_ingest.metrics import BATCH_ROWS, COMMIT_SECONDS, CONFLICT_FALLBACKS, COPY_SECONDS
from tsmesh_ingest.partitions import DAY_NS, PartitionManager

HOUR_NS = 3_600 * 1_000_000_000
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
_ROW = struct.Struct(">hiqiqid")
_STAGE_ROW = struct.Struct(">hiqiqiqid")
POINT_COLUMNS = ("series_id", "ts", "value")

STAGE_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS ingest_stage "
    "(seq bigint, series_id bigint, ts bigint, value double precision) ON COMMIT DELETE ROWS"
)
MERGE_SQL = (
    "INSERT INTO ts.points (series_id, ts, value) "
    "SELECT DISTINCT ON (series_id, ts) series_id, ts, value FROM ingest_stage "
    "ORDER BY series_id, ts, seq DESC "
    "ON CONFLICT (series_id, ts) DO UPDATE SET value = EXCLUDED.value"
)
SERIES_SQL = (
    "INSERT INTO ts.series (series_id, tenant_id, metric, labels) "
    "SELECT s, t, m, l::jsonb FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[]) AS u(s, t, m, l) "
    "ON CONFLICT (series_id) DO NOTHING"
)

Hook = Callable[[], Awaitable[None]]


@dataclass
class Item:
    """A decoded Kafka record: one tenant's batch and its ids as stored (signed)."""

    tenant_id: str
    batch: common_pb2.PointBatch
    signed_ids: Sequence[int]
    raw: bytes = b""
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass
class WriterHooks:
    """Fault-injection points for tests (a crash after the COPY, or after the database commit)."""

    after_copy: Hook | None = None
    after_commit: Hook | None = None


@dataclass
class Columns:
    """The batch as columns, its pending (series, hour) ranges, the days it touches, new series."""

    sids: list[int] = field(default_factory=list)
    tss: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    pending: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    new_series: dict[int, tuple[str, str, str]] = field(default_factory=dict)


class KnownSeries:
    """Series ids already in ``ts.series`` (id -> tenant), bounded."""

    def __init__(self, max_entries: int = 2_000_000) -> None:
        self._max = max_entries
        self.tenants: dict[int, str] = {}

    def add(self, entries: dict[int, str]) -> None:
        if len(self.tenants) + len(entries) > self._max:
            self.tenants.clear()
        self.tenants.update(entries)


def columns_of(items: Sequence[Item], known: KnownSeries) -> Columns:
    """Flatten records into COPY columns; the only per-point Python work of the writer."""
    cols = Columns()
    pending = cols.pending
    tenants = known.tenants
    for item in items:
        points = item.batch.points
        tss = [p.timestamp_ns for p in points]
        cols.sids.extend(item.signed_ids)
        cols.tss.extend(tss)
        cols.values.extend([p.value for p in points])
        for i, (sid, ts) in enumerate(zip(item.signed_ids, tss, strict=True)):
            key = (sid, ts // HOUR_NS)
            span = pending.get(key)
            if span is None:
                pending[key] = [ts, ts]
                if sid not in tenants and sid not in cols.new_series:
                    point = points[i]
                    labels = orjson.dumps(dict(sorted(point.labels.items()))).decode()
                    cols.new_series[sid] = (item.tenant_id, point.metric, labels)
            elif ts < span[0]:
                span[0] = ts
            elif ts > span[1]:
                span[1] = ts
    return cols


def copy_payload(sids: Sequence[int], tss: Sequence[int], values: Sequence[float]) -> bytes:
    """PostgreSQL binary COPY data for (series_id, ts, value), packed in one C-level pass."""
    rows = map(_ROW.pack, repeat(3), repeat(8), sids, repeat(8), tss, repeat(8), values)
    return _HEADER + b"".join(rows) + _TRAILER


def stage_payload(sids: Sequence[int], tss: Sequence[int], values: Sequence[float]) -> bytes:
    rows = map(_STAGE_ROW.pack, repeat(4), repeat(8), count(), repeat(8), sids, repeat(8), tss, repeat(8), values)
    return _HEADER + b"".join(rows) + _TRAILER


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


class PointStore:
    """Writes batches of records in one transaction each; see the module docstring."""

    def __init__(
        self, pool: Any, partitions: PartitionManager, known: KnownSeries, hooks: WriterHooks | None = None
    ) -> None:
        self._pool = pool
        self._partitions = partitions
        self._known = known
        self._hooks = hooks or WriterHooks()

    async def write(self, items: Sequence[Item]) -> int:
        """Store ``items`` atomically; returns the number of rows. Raises asyncpg/OS errors as they come."""
        cols = columns_of(items, self._known)
        if not cols.sids:
            return 0
        start = time.perf_counter()
        async with self._pool.acquire() as conn:
            days = {hour * HOUR_NS // DAY_NS for _, hour in cols.pending}
            if self._partitions.missing(days):
                await self._partitions.ensure(conn, days)
            async with conn.transaction():
                if cols.new_series:
                    await self._upsert_series(conn, cols.new_series)
                copy_start = time.perf_counter()
                await self._copy_points(conn, cols)
                COPY_SECONDS.observe(time.perf_counter() - copy_start)
                await conn.copy_records_to_table(
                    "rollup_pending",
                    schema_name="ts",
                    columns=("series_id", "lo", "hi"),
                    records=[(sid, span[0], span[1]) for (sid, _), span in cols.pending.items()],
                )
                if self._hooks.after_copy is not None:
                    await self._hooks.after_copy()
        if cols.new_series:
            self._known.add({sid: entry[0] for sid, entry in cols.new_series.items()})
        BATCH_ROWS.observe(len(cols.sids))
        COMMIT_SECONDS.observe(time.perf_counter() - start)
        return len(cols.sids)

    async def _upsert_series(self, conn: Any, new: dict[int, tuple[str, str, str]]) -> None:
        ids = list(new)
        await conn.execute(
            SERIES_SQL, ids, [new[s][0] for s in ids], [new[s][1] for s in ids], [new[s][2] for s in ids]
        )
        clashes = await conn.fetch(
            "SELECT series_id, tenant_id FROM ts.series WHERE series_id = ANY($1::bigint[])", ids
        )
        for row in clashes:
            if row["tenant_id"] != new[row["series_id"]][0]:
                raise SeriesClash(row["series_id"])

    async def _copy_points(self, conn: Any, cols: Columns) -> None:
        try:
            async with conn.transaction():
                await conn.copy_to_table(
                    "points",
                    schema_name="ts",
                    source=_once(copy_payload(cols.sids, cols.tss, cols.values)),
                    columns=POINT_COLUMNS,
                    format="binary",
                )
        except asyncpg.UniqueViolationError:
            CONFLICT_FALLBACKS.inc()
            await conn.execute(STAGE_DDL)
            await conn.copy_to_table(
                "ingest_stage",
                source=_once(stage_payload(cols.sids, cols.tss, cols.values)),
                columns=("seq", *POINT_COLUMNS),
                format="binary",
            )
            await conn.execute(MERGE_SQL)


class SeriesClash(Exception):
    """A series id already registered to another tenant: the record is refused (dead-lettered)."""

    def __init__(self, series_id: int) -> None:
        super().__init__(f"series id {series_id} belongs to another tenant")
        self.series_id = series_id
