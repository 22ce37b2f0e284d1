"""One writer transaction: series registry upserts, points by binary COPY, rollups or pending ranges.

Fast path: the rows are COPYed (binary) straight into ``ts.points`` inside a savepoint. Its success
proves every (series, ts) of the batch is new (the unique index would refuse a stored or repeated
one), so the batch's own per-(series, minute) and per-(series, hour) partial aggregates, computed
by numpy, are merged into ``ts.rollup_1m`` / ``ts.rollup_1h`` in the same transaction (``INSERT ..
ON CONFLICT DO UPDATE``: counts and sums add, min/max/first/last compare): the rollups are current
when the points commit, and no pending range is written (ADR 0205).

When the batch overlaps stored rows (a redelivery, a rewrite) or repeats a (series, ts) within
itself, the unique index refuses the COPY; the savepoint rolls back and the conflict-tolerant path
COPYs into a session temp table and merges with ``INSERT .. SELECT DISTINCT ON .. ON CONFLICT DO
UPDATE`` (last write wins, in record order). Its points may already be counted in a rollup, so it
merges no partials: it COPYs one pending range per (series, hour) in the same transaction, and the
refresher (``rollups.py``) recomputes those buckets from raw.
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

from tsmesh_ingest.db import operation
from tsmesh_ingest.metrics import BATCH_ROWS, COMMIT_SECONDS, CONFLICT_FALLBACKS, COPY_SECONDS, ROLLUP_BUCKETS
from tsmesh_ingest.partitions import DAY_NS, PartitionManager

MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS
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
_PARTIAL_ROW = _row_dtype(
    ("width", ">i8"), ("sid", ">i8"), ("bucket", ">i8"), ("count", ">i8"), ("sum", ">f8"), ("min", ">f8"),
    ("max", ">f8"), ("first_ts", ">i8"), ("first", ">f8"), ("last_ts", ">i8"), ("last", ">f8"), ("flags", ">i8"),
)  # fmt: skip

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
PARTIAL_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS ingest_partial (width bigint, series_id bigint, bucket bigint, count bigint, "
    "sum double precision, min double precision, max double precision, first_ts bigint, first double precision, "
    "last_ts bigint, last double precision, flags bigint) ON COMMIT DELETE ROWS"
)
PARTIAL_COLUMNS = (
    "width", "series_id", "bucket", "count", "sum", "min", "max", "first_ts", "first", "last_ts", "last", "flags",
)  # fmt: skip
# ``flags`` of a minute partial: its points never go down (no counter reset inside) and no two share
# a millisecond (migration 0003); both stay true in a merge only when the two partials do not
# interleave in time and the later one starts at or above (and in a later millisecond than) the
# earlier one's end. NULL and AND keep an unknown unknown.
ASCENDING, DISTINCT_MS = 1, 2
_MS = "(({ts}) - ((({ts}) % 1000000) + 1000000) % 1000000)"
_FLAGS_MERGE = f"""
        ascending = CASE
            WHEN r.last_ts < EXCLUDED.first_ts THEN r.ascending AND EXCLUDED.ascending AND r.last <= EXCLUDED.first
            WHEN EXCLUDED.last_ts < r.first_ts THEN r.ascending AND EXCLUDED.ascending AND EXCLUDED.last <= r.first
            ELSE false END,
        distinct_ms = CASE
            WHEN {_MS.format(ts="r.last_ts")} < {_MS.format(ts="EXCLUDED.first_ts")}
                THEN r.distinct_ms AND EXCLUDED.distinct_ms
            WHEN {_MS.format(ts="EXCLUDED.last_ts")} < {_MS.format(ts="r.first_ts")}
                THEN r.distinct_ms AND EXCLUDED.distinct_ms
            ELSE false END,"""
_FLAGS_INSERT = {
    "columns": ", ascending, distinct_ms",
    "values": f", (flags & {ASCENDING}) <> 0, (flags & {DISTINCT_MS}) <> 0",
}
# float8 ``+`` raises "value out of range: overflow" when two finite sums overflow (the refresher's
# ``sum()`` too); valid points must never fail a batch, so the merge saturates to +-Infinity, as
# numpy's sums of the partials do. Only operands both above 1e291 (under half an ulp of the largest
# float8) can overflow; for those, half the sum cannot (and halving is exact, never an underflow,
# which float8 ``*`` would raise too) and exceeds half the largest float8 exactly when the sum would.
# NaN operands (and inf + -inf) give NaN.
_HALF_SUM = "(r.sum * 0.5::float8 + EXCLUDED.sum * 0.5::float8)"
_HALF_MAX = "('1.7976931348623157e308'::float8 * 0.5::float8)"
SATURATING_SUM = (
    "CASE WHEN abs(r.sum) < '1e291'::float8 OR abs(EXCLUDED.sum) < '1e291'::float8 THEN r.sum + EXCLUDED.sum "
    f"WHEN {_HALF_SUM} = 'NaN'::float8 THEN 'NaN'::float8 "
    f"WHEN {_HALF_SUM} > {_HALF_MAX} THEN 'Infinity'::float8 "
    f"WHEN {_HALF_SUM} < -{_HALF_MAX} THEN '-Infinity'::float8 "
    "ELSE r.sum + EXCLUDED.sum END"
)
# Merging a partial of points new to the table (the fast path proved it) is exact: counts and sums
# add, min/max compare (least/greatest rank NaN like min()/max() do), first/last go to the earlier /
# later timestamp. Rows arrive sorted by (series_id, bucket), so concurrent merges lock in one order.
MERGE_PARTIALS_SQL = ";".join(
    f"""
    INSERT INTO ts.{table} AS r (series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last{cols})
    SELECT series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last{values}
    FROM ingest_partial WHERE width = {width}
    ON CONFLICT (series_id, bucket) DO UPDATE SET{flags}
        count = r.count + EXCLUDED.count, sum = {SATURATING_SUM},
        min = least(r.min, EXCLUDED.min), max = greatest(r.max, EXCLUDED.max),
        first_ts = least(r.first_ts, EXCLUDED.first_ts),
        first = CASE WHEN EXCLUDED.first_ts < r.first_ts THEN EXCLUDED.first ELSE r.first END,
        last_ts = greatest(r.last_ts, EXCLUDED.last_ts),
        last = CASE WHEN EXCLUDED.last_ts > r.last_ts THEN EXCLUDED.last ELSE r.last END
    """  # noqa: S608  # nosec B608 # the table names and widths are the literals below
    for table, width, cols, values, flags in (
        ("rollup_1m", MINUTE_NS, _FLAGS_INSERT["columns"], _FLAGS_INSERT["values"], _FLAGS_MERGE),
        ("rollup_1h", HOUR_NS, "", "", ""),
    )
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
            tss: list[int] = []
            values: list[float] = []
            add_ts, add_value = tss.append, values.append
            for p in points:  # one pass: each point's upb wrapper is made once
                add_ts(p.timestamp_ns)
                add_value(p.value)
            self.tss, self.values = tss, values


@dataclass
class WriterHooks:
    """Fault-injection points for tests (a crash after the COPY, or after the database commit)."""

    after_copy: Hook | None = None
    after_commit: Hook | None = None


@dataclass
class Partials:
    """Aggregates of a batch's points per (series, bucket), sorted by (series_id, bucket)."""

    sids: npt.NDArray[np.int64]
    buckets: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]
    sum: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]
    first_ts: npt.NDArray[np.int64]
    first: npt.NDArray[np.float64]
    last_ts: npt.NDArray[np.int64]
    last: npt.NDArray[np.float64]
    flags: npt.NDArray[np.int64]  # ASCENDING | DISTINCT_MS (minute partials; 0 for coarser ones)


def _runs(sids: npt.NDArray[np.int64], buckets: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.intp], ...]:
    """(first index, last index) of each run of equal (sid, bucket), in arrays sorted by both."""
    if not len(sids):
        empty = np.zeros(0, dtype=np.intp)
        return empty, empty
    change = np.flatnonzero((sids[1:] != sids[:-1]) | (buckets[1:] != buckets[:-1]))
    return np.concatenate(([0], change + 1)), np.append(change, len(sids) - 1)


def _reduce(ufunc: np.ufunc, values: npt.NDArray[Any], starts: npt.NDArray[np.intp]) -> npt.NDArray[Any]:
    # Sums past the float8 range are +-inf (or NaN), as the merge's SATURATING_SUM gives them.
    with np.errstate(over="ignore", invalid="ignore"):
        return ufunc.reduceat(values, starts) if len(starts) else values[:0]


def partials_of(
    sids: npt.NDArray[np.int64], tss: npt.NDArray[np.int64], values: npt.NDArray[np.float64], width: int
) -> Partials:
    """Per-(series, ``width`` bucket) aggregates of points sorted by (series_id, ts), distinct pairs.
    ``fmin`` skips NaN unless every value is NaN and ``maximum`` propagates it: SQL's ``min()`` and
    ``max()`` over float8, where NaN ranks above every number."""
    buckets = tss // width * width
    starts, lasts = _runs(sids, buckets)
    return Partials(
        sids[starts],
        buckets[starts],
        (lasts - starts + 1).astype(np.int64),
        _reduce(np.add, values, starts),
        _reduce(np.fmin, values, starts),
        _reduce(np.maximum, values, starts),
        tss[starts],
        values[starts],
        tss[lasts],
        values[lasts],
        _order_flags(sids, buckets, tss, values, starts),
    )


def _order_flags(
    sids: npt.NDArray[np.int64],
    buckets: npt.NDArray[np.int64],
    tss: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    starts: npt.NDArray[np.intp],
) -> npt.NDArray[np.int64]:
    """ASCENDING | DISTINCT_MS per run: no point below the one before it, no two in one millisecond."""
    if not len(starts):
        return np.zeros(0, dtype=np.int64)
    inside = (sids[1:] == sids[:-1]) & (buckets[1:] == buckets[:-1])
    drops = np.zeros(len(sids), dtype=np.int64)
    shared = np.zeros(len(sids), dtype=np.int64)
    drops[:-1] = inside & (values[1:] < values[:-1])
    shared[:-1] = inside & (tss[1:] // 1_000_000 == tss[:-1] // 1_000_000)
    flags = np.where(np.add.reduceat(drops, starts) == 0, ASCENDING, 0)
    return (flags | np.where(np.add.reduceat(shared, starts) == 0, DISTINCT_MS, 0)).astype(np.int64)


def coarsen(fine: Partials, width: int) -> Partials:
    """The same aggregates over ``width`` buckets (a multiple of ``fine``'s), merged in order."""
    buckets = fine.buckets // width * width
    starts, lasts = _runs(fine.sids, buckets)
    return Partials(
        fine.sids[starts],
        buckets[starts],
        _reduce(np.add, fine.count, starts),
        _reduce(np.add, fine.sum, starts),
        _reduce(np.fmin, fine.min, starts),
        _reduce(np.maximum, fine.max, starts),
        fine.first_ts[starts],
        fine.first[starts],
        fine.last_ts[lasts],
        fine.last[lasts],
        np.zeros(len(starts), dtype=np.int64),
    )


@dataclass
class Columns:
    """The batch as columns (in record order, and sorted by (series_id, ts)), its per-minute and
    per-hour partial aggregates, the new series. The hourly first/last timestamps are the batch's
    pending (series, hour) ranges."""

    sids: npt.NDArray[np.int64]
    tss: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    order: npt.NDArray[np.intp]
    minutes: Partials
    hours: Partials
    new_series: dict[int, tuple[str, str, str]] = field(default_factory=dict)

    @property
    def pending(self) -> dict[tuple[int, int], list[int]]:
        """``{(series_id, hour): [lo, hi]}`` (for inspection; the store COPYs the columns)."""
        h = self.hours
        keys = zip(h.sids.tolist(), (h.buckets // HOUR_NS).tolist(), strict=True)
        spans = zip(h.first_ts.tolist(), h.last_ts.tolist(), strict=True)
        return {key: list(span) for key, span in zip(keys, spans, strict=True)}

    def days(self) -> set[int]:
        return {hour // DAY_NS for hour in np.unique(self.hours.buckets).tolist()}


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
    """Flatten records into COPY columns and partial aggregates, in bulk (numpy, no per-point Python)."""
    if items:
        sids = np.concatenate([_i64(item.signed_ids) for item in items])
        tss = np.concatenate([_i64(item.tss) for item in items])
        values = np.concatenate([np.asarray(item.values, dtype=np.float64) for item in items])
    else:
        sids, tss, values = _i64(()), _i64(()), np.zeros(0)
    order = np.lexsort((tss, sids))
    minutes = partials_of(sids[order], tss[order], values[order], MINUTE_NS)
    cols = Columns(sids, tss, values, order, minutes, coarsen(minutes, HOUR_NS))
    tenants = known.tenants
    missing = {sid for sid in np.unique(cols.hours.sids).tolist() if sid not in tenants}
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
    hours = cols.hours
    return _pack(_PENDING_ROW, {"sid": hours.sids, "lo": hours.first_ts, "hi": hours.last_ts})


def partial_payload(cols: Columns) -> bytes:
    """Binary COPY data for ``ingest_partial``: the minute partials, then the hour partials."""
    parts = (cols.minutes, cols.hours)
    widths = [np.full(len(p.sids), w, dtype=np.int64) for p, w in zip(parts, (MINUTE_NS, HOUR_NS), strict=True)]
    columns: dict[str, Any] = {"width": np.concatenate(widths)}
    for name, column in (("sid", "sids"), ("bucket", "buckets")):
        columns[name] = np.concatenate([getattr(p, column) for p in parts])
    for name in ("count", "sum", "min", "max", "first_ts", "first", "last_ts", "last", "flags"):
        columns[name] = np.concatenate([getattr(p, name) for p in parts])
    return _pack(_PARTIAL_ROW, columns)


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
        async with operation(self._pool) as conn:
            days = cols.days()
            if self._partitions.missing(days):
                await self._partitions.ensure(conn, days)
            async with conn.transaction():
                if cols.new_series:
                    await self._upsert_series(conn, cols.new_series)
                copy_start = time.perf_counter()
                fast = await self._copy_points(conn, cols)
                COPY_SECONDS.observe(time.perf_counter() - copy_start)
                if fast:
                    await self._merge_partials(conn, cols)
                else:
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
        if fast:
            ROLLUP_BUCKETS.labels("merge").inc(len(cols.minutes.sids))
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

    async def _merge_partials(self, conn: Any, cols: Columns) -> None:
        await conn.execute(PARTIAL_DDL)
        await conn.copy_to_table(
            "ingest_partial", source=_once(partial_payload(cols)), columns=PARTIAL_COLUMNS, format="binary"
        )
        await conn.execute(MERGE_PARTIALS_SQL)  # both tables, one round trip

    async def _copy_points(self, conn: Any, cols: Columns) -> bool:
        """COPY the points; True on the fast path (every (series, ts) was new), False after the
        conflict-tolerant merge."""
        order = cols.order  # sorted by (series_id, ts): index inserts walk the btree in order
        try:
            async with conn.transaction():
                await conn.copy_to_table(
                    "points",
                    schema_name="ts",
                    source=_once(copy_payload(cols.sids[order], cols.tss[order], cols.values[order])),
                    columns=POINT_COLUMNS,
                    format="binary",
                )
            return True
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
            return False


class SeriesClash(Exception):
    """A series id already registered to another tenant: the record is refused (dead-lettered)."""

    def __init__(self, series_id: int) -> None:
        super().__init__(f"series id {series_id} belongs to another tenant")
        self.series_id = series_id
