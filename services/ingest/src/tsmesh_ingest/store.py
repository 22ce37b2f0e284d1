"""One writer transaction: series registry upserts, points by binary COPY, pending rollup ranges.

Fast path: the rows are COPYed (binary) straight into ``ts.points`` inside a savepoint. When the
batch overlaps stored rows (a redelivery, a rewrite) or repeats a (series, ts) within itself, the
unique index refuses the COPY; the savepoint rolls back and the conflict-tolerant path COPYs into a
session temp table and merges with ``INSERT .. SELECT DISTINCT ON .. ON CONFLICT DO UPDATE``
(last write wins, in record order). Either way the pending rollup ranges of the batch, one per
(series, hour), go in by COPY in the same transaction.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson
from tsmesh.v1 import common_pb2

from tsmesh_ingest.metrics import BATCH_ROWS, COMMIT_SECONDS, CONFLICT_FALLBACKS, COPY_SECONDS
from tsmesh_ingest.partitions import DAY_NS, PartitionManager

HOUR_NS = 3_600 * 1_000_000_000
_HEADER = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
_TRAILER = b"\xff\xff"
POINT_COLUMNS = ("series_id", "ts", "value")
PENDING_COLUMNS = ("series_id", "lo", "hi")


def _row_dtype(*columns: tuple[str, str]) -> np.dtype[Any]:
    """A packed big-endian binary COPY tuple: field count, then (length, value) per 8-byte column."""
    fields: list[tuple[str, str]] = [("n", ">i2")]
    for name, kind in columns:
        fields += [(f"len_{name}", ">i4"), (name, kind)]
    return np.dtype(fields)


_POINT_ROW = _row_dtype(("sid", ">i8"), ("ts", ">i8"), ("value", ">f8"))
_STAGE_ROW = _row_dtype(("seq", ">i8"), ("sid", ">i8"), ("ts", ">i8"), ("value", ">f8"))
_PENDING_ROW = _row_dtype(("sid", ">i8"), ("lo", ">i8"), ("hi", ">i8"))

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
    """A decoded Kafka record: one tenant's batch, its ids as stored (signed), its columns."""

    tenant_id: str
    batch: common_pb2.PointBatch
    signed_ids: Sequence[int]
    raw: bytes = b""
    headers: Sequence[tuple[str, bytes]] = ()
    tss: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        points = self.batch.points
        if points and not self.tss:
            self.tss = [p.timestamp_ns for p in points]
            self.values = [p.value for p in points]


@dataclass
class WriterHooks:
    """Fault-injection points for tests (a crash after the COPY, or after the database commit)."""

    after_copy: Hook | None = None
    after_commit: Hook | None = None


@dataclass
class Columns:
    """The batch as columns, its pending (series, hour) ranges as columns, the new series."""

    sids: npt.NDArray[np.int64]
    tss: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    pending_sids: npt.NDArray[np.int64]
    pending_hours: npt.NDArray[np.int64]
    pending_lo: npt.NDArray[np.int64]
    pending_hi: npt.NDArray[np.int64]
    new_series: dict[int, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def pending(self) -> dict[tuple[int, int], list[int]]:
        """``{(series_id, hour): [lo, hi]}`` (for inspection; the store COPYs the columns)."""
        keys = zip(self.pending_sids.tolist(), self.pending_hours.tolist(), strict=True)
        spans = zip(self.pending_lo.tolist(), self.pending_hi.tolist(), strict=True)
        return {key: list(span) for key, span in zip(keys, spans, strict=True)}

    def days(self) -> set[int]:
        return {hour * HOUR_NS // DAY_NS for hour in np.unique(self.pending_hours).tolist()}


class KnownSeries:
    """Series ids already in ``ts.series`` (id -> tenant), bounded."""

    def __init__(self, max_entries: int = 2_000_000) -> None:
        self._max = max_entries
        self.tenants: dict[int, str] = {}

    def add(self, entries: dict[int, str]) -> None:
        if len(self.tenants) + len(entries) > self._max:
            self.tenants.clear()
        self.tenants.update(entries)


def _i64(values: Sequence[int]) -> npt.NDArray[np.int64]:
    return np.asarray(values, dtype=np.int64)


def columns_of(items: Sequence[Item], known: KnownSeries) -> Columns:
    """Flatten records into COPY columns and pending ranges, in bulk (numpy, no per-point Python)."""
    if not items:
        empty = np.zeros(0, dtype=np.int64)
        return Columns(empty, empty, np.zeros(0), empty, empty, empty, empty)
    sids = np.concatenate([_i64(item.signed_ids) for item in items])
    tss = np.concatenate([_i64(item.tss) for item in items])
    values = np.concatenate([np.asarray(item.values, dtype=np.float64) for item in items])
    hours = tss // HOUR_NS
    order = np.lexsort((hours, sids))
    s_sorted, h_sorted, t_sorted = sids[order], hours[order], tss[order]
    change = (s_sorted[1:] != s_sorted[:-1]) | (h_sorted[1:] != h_sorted[:-1])
    starts = np.concatenate(([0], np.flatnonzero(change) + 1)) if len(order) else np.zeros(0, dtype=np.intp)
    cols = Columns(
        sids,
        tss,
        values,
        s_sorted[starts],
        h_sorted[starts],
        np.minimum.reduceat(t_sorted, starts) if len(starts) else starts.astype(np.int64),
        np.maximum.reduceat(t_sorted, starts) if len(starts) else starts.astype(np.int64),
    )
    tenants = known.tenants
    missing = {sid for sid in np.unique(cols.pending_sids).tolist() if sid not in tenants}
    if missing:
        cols.new_series = _identities(items, missing)
    return cols


def _identities(items: Sequence[Item], missing: set[int]) -> dict[int, tuple[str, str, str]]:
    """(tenant, metric, labels JSON) of each series id in ``missing`` (first occurrence)."""
    found: dict[int, tuple[str, str, str]] = {}
    for item in items:
        points = item.batch.points
        for i, sid in enumerate(item.signed_ids):
            if sid in missing and sid not in found:
                point = points[i]
                labels = orjson.dumps(dict(sorted(point.labels.items()))).decode()
                found[sid] = (item.tenant_id, point.metric, labels)
        if len(found) == len(missing):
            break
    return found


def _pack(dtype: np.dtype[Any], columns: dict[str, Any]) -> bytes:
    rows = np.empty(len(next(iter(columns.values()))), dtype=dtype)
    rows["n"] = len(columns)
    for name, values in columns.items():
        rows[f"len_{name}"] = 8
        rows[name] = values
    return _HEADER + rows.tobytes() + _TRAILER


def copy_payload(sids: npt.ArrayLike, tss: npt.ArrayLike, values: npt.ArrayLike) -> bytes:
    """PostgreSQL binary COPY data for (series_id, ts, value), packed by numpy in one pass."""
    return _pack(_POINT_ROW, {"sid": sids, "ts": tss, "value": values})


def stage_payload(sids: npt.ArrayLike, tss: npt.ArrayLike, values: npt.ArrayLike) -> bytes:
    return _pack(_STAGE_ROW, {"seq": np.arange(np.size(sids)), "sid": sids, "ts": tss, "value": values})


def pending_payload(cols: Columns) -> bytes:
    return _pack(_PENDING_ROW, {"sid": cols.pending_sids, "lo": cols.pending_lo, "hi": cols.pending_hi})


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

    def forget_partitions(self) -> None:
        """Forget which day partitions exist, so the next write re-ensures them."""
        self._partitions.forget_all()

    async def write(self, items: Sequence[Item]) -> int:
        """Store ``items`` atomically; returns the number of rows. Raises asyncpg/OS errors as they come."""
        cols = columns_of(items, self._known)
        if not len(cols.sids):
            return 0
        start = time.perf_counter()
        async with self._pool.acquire() as conn:
            days = cols.days()
            if self._partitions.missing(days):
                await self._partitions.ensure(conn, days)
            async with conn.transaction():
                if cols.new_series:
                    await self._upsert_series(conn, cols.new_series)
                copy_start = time.perf_counter()
                await self._copy_points(conn, cols)
                COPY_SECONDS.observe(time.perf_counter() - copy_start)
                await conn.copy_to_table(
                    "rollup_pending",
                    schema_name="ts",
                    source=_once(pending_payload(cols)),
                    columns=PENDING_COLUMNS,
                    format="binary",
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
