"""``tsmesh_query.sql``: which rows a statement returns (``row_mode``, pure), and what its statements
compute on real PostgreSQL (the ``ts`` schema, the query role's view): raw step buckets, rollup rows
with and without a pending overlay, and the saturating sum when float8 ``sum`` overflows."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import numpy as np
import pytest
from tsmesh.v1 import query_pb2
from tsq_support import Loader

from tsmesh_query.plan import RESOLUTION_WIDTH
from tsmesh_query.sql import BY_GROUP, BY_SERIES, PARTIALS, range_sql, row_mode, series_sql

RAW, M1, H1 = query_pb2.RESOLUTION_RAW, query_pb2.RESOLUTION_1M, query_pb2.RESOLUTION_1H
MINUTE = RESOLUTION_WIDTH[M1]
T0 = 1_700_000_040 * 10**9 // MINUTE * MINUTE  # a minute boundary


def test_row_mode_says_what_the_rows_are() -> None:
    assert row_mode(RAW, "sum", MINUTE, True) == BY_GROUP
    assert row_mode(M1, "avg", MINUTE, True) == BY_SERIES  # one rollup row is one step bucket
    assert row_mode(M1, "avg", 5 * MINUTE, True) == PARTIALS
    assert row_mode(M1, "max", MINUTE, False) == PARTIALS  # several series per group
    assert row_mode(M1, "first", 5 * MINUTE, True) == BY_GROUP  # ordered by time: stays in PostgreSQL
    assert row_mode(H1, "last", RESOLUTION_WIDTH[H1], True) == BY_SERIES


def test_series_sql_narrows_by_label_containment_only_when_asked() -> None:
    assert "@>" not in series_sql(False)
    assert "labels @> $4::jsonb" in series_sql(True)


def unpack(row: asyncpg.Record) -> list[tuple[int, int, float, int]]:
    """The (group key, bucket, value, count) rows of one packed row, sorted."""
    if row["groups"] is None:
        return []
    columns = (
        np.frombuffer(row["groups"], ">i8"),
        np.frombuffer(row["buckets"], ">i8"),
        np.frombuffer(row["vals"], ">f8"),
        np.frombuffer(row["counts"], ">i8"),
    )
    return sorted((int(g), int(b), float(v), int(n)) for g, b, v, n in zip(*columns, strict=True))


@pytest.fixture
async def reader(ts_db: Any) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(ts_db.admin_dsn)
    await conn.execute("SET ROLE tsmesh_query")
    try:
        yield conn
    finally:
        await conn.close()


async def run(
    conn: asyncpg.Connection, sql: str, ids: list[int], lo: int, hi: int
) -> list[tuple[int, int, float, int]]:
    rows = await conn.fetch(sql, ids, list(range(len(ids))), lo, hi)
    return sorted(r for row in rows for r in unpack(row))


@pytest.mark.integration
async def test_raw_and_rollup_statements_compute_the_same_buckets(loader: Loader, reader: asyncpg.Connection) -> None:
    a = await loader.series("sql-t", "m", {"h": "a"})
    b = await loader.series("sql-t", "m", {"h": "b"})
    points = [(a, T0 + k * 10**10, float(k)) for k in range(12)] + [(b, T0 + 5 * 10**9, 100.0)]
    await loader.points(points)
    await loader.refresh_rollups([a, b])
    lo, hi = T0, T0 + 2 * MINUTE
    raw = await run(reader, range_sql(RAW, "sum", MINUTE), [a, b], lo, hi)
    assert raw == [(0, T0, 15.0, 6), (0, T0 + MINUTE, 51.0, 6), (1, T0, 100.0, 1)]  # group index keys
    by_series = await run(reader, range_sql(M1, "sum", MINUTE, one_series_per_group=True), [a, b], lo, hi)
    assert by_series == sorted([(a, T0, 15.0, 6), (a, T0 + MINUTE, 51.0, 6), (b, T0, 100.0, 1)])
    first = await run(reader, range_sql(M1, "first", 2 * MINUTE), [a, b], lo, hi)
    assert first == [(0, T0, 0.0, 12), (1, T0, 100.0, 1)]


@pytest.mark.integration
async def test_a_pending_range_is_recomputed_from_raw_points(loader: Loader, reader: asyncpg.Connection) -> None:
    sid = await loader.series("sql-t", "pending", {})
    await loader.points([(sid, T0 + 10**9, 1.0)])
    await loader.refresh_rollups([sid])
    await loader.points([(sid, T0 + 2 * 10**9, 2.0), (sid, T0 + MINUTE + 10**9, 4.0)], pending=True)
    sql = range_sql(M1, "max", MINUTE, one_series_per_group=True)
    got = await run(reader, sql, [sid], T0, T0 + 2 * MINUTE)
    assert got == [(sid, T0, 2.0, 2), (sid, T0 + MINUTE, 4.0, 1)]  # not the stale rollup row (1.0, 1)


@pytest.mark.integration
async def test_a_sum_past_the_float8_range_needs_the_saturating_statement(
    loader: Loader, reader: asyncpg.Connection
) -> None:
    sid = await loader.series("sql-t", "huge", {})
    await loader.points(
        [(sid, T0 + k, 1.5e308) for k in (1, 2)] + [(sid, T0 + MINUTE, -1.5e308), (sid, T0 + MINUTE + 1, -1.5e308)]
    )
    with pytest.raises(asyncpg.NumericValueOutOfRangeError):
        await run(reader, range_sql(RAW, "sum", MINUTE), [sid], T0, T0 + 2 * MINUTE)
    got = await run(reader, range_sql(RAW, "sum", MINUTE, saturating=True), [sid], T0, T0 + 2 * MINUTE)
    assert [(bucket, value) for _, bucket, value, _ in got] == [(T0, math.inf), (T0 + MINUTE, -math.inf)]
