"""A pre-filled ``ts`` schema for benchmarks at realistic size, built once and cached as a cluster data directory.

The data is written by SQL (``generate_series``) straight into ``ts.series``, ``ts.points``,
``ts.rollup_1m`` and ``ts.rollup_1h``: it BYPASSES INGEST (no Kafka, no writer, no validation), so
building 10 million points takes a minute or two instead of the writer's own time. Shape: ``series``
series of tenant ``prefill`` (ids spread over the whole bigint range like real hashed ids, but not
the hash of their labels), ``points // series`` points each, one every 15 s from 00:00 UTC of
:attr:`Prefill.day` (a day in the past), and their exact 1m / 1h rollups.

The stopped cluster's data directory is kept under ``.tsmesh/bench-prefill/`` and copied by
``ThrowawayPostgres(data_from=...)`` for each run. It is rebuilt when its day is older than
:data:`MAX_AGE_DAYS` (the writer only accepts points within the raw retention, 30 days by default).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".tsmesh" / "bench-prefill"
STEP_NS = 15 * 1_000_000_000
DAY_NS = 86_400 * 1_000_000_000
MAX_AGE_DAYS = 20


@dataclass(frozen=True)
class Prefill:
    points: int
    series: int
    data: Path  # the stopped cluster's data directory
    day: int  # days since the epoch holding the points

    @property
    def free_from_ns(self) -> int:
        """A time after every pre-filled point, in the same day partition: new writes go from here."""
        return self.day * DAY_NS + 6 * 3600 * 1_000_000_000


def _today() -> int:
    return int(dt.datetime.now(dt.UTC).timestamp()) // 86_400


def prefilled(points: int, series: int) -> Prefill:
    """The cached pre-filled cluster for ``points`` / ``series``, built now if missing or too old."""
    folder = CACHE / f"p{points}-s{series}"
    stamp = folder / "day"
    if stamp.exists() and int(stamp.read_text()) >= _today() - MAX_AGE_DAYS:
        return Prefill(points, series, folder / "data", int(stamp.read_text()))
    shutil.rmtree(folder, ignore_errors=True)
    day = _today() - 1
    started = time.monotonic()
    print(f"building the pre-filled database ({points:,} points, {series:,} series; once, cached)", flush=True)
    data = asyncio.run(_build(points, series, day))
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(str(data), folder / "data")
    shutil.rmtree(data.parent, ignore_errors=True)
    stamp.write_text(str(day))
    print(f"pre-filled in {time.monotonic() - started:.0f}s -> {folder}", flush=True)
    return Prefill(points, series, folder / "data", day)


async def _build(points: int, series: int, day: int) -> Path:
    import asyncpg
    from throwaway import ThrowawayPostgres

    from tsmesh_ingest.migrate import upgrade
    from tsmesh_ingest.partitions import PartitionManager

    pg = ThrowawayPostgres({"maintenance_work_mem": "256MB", "work_mem": "256MB", "max_wal_size": "8GB"})
    try:
        await asyncio.to_thread(upgrade, pg.dsn("tsmesh_ingest"))
        conn = await asyncpg.connect(pg.dsn("tsmesh_ingest"))
        try:
            await PartitionManager().ensure(conn, [day])
            per_series = max(1, points // series)
            start = day * DAY_NS
            await conn.execute(
                "INSERT INTO ts.series (series_id, tenant_id, metric, labels) "
                "SELECT ('x' || substr(md5('prefill/' || s), 1, 16))::bit(64)::bigint, 'prefill', 'prefill_metric', "
                "jsonb_build_object('host', 'h' || (s % 500), 'series', s::text) FROM generate_series(0, $1 - 1) AS s",
                series,
            )
            await conn.execute(
                "INSERT INTO ts.points (series_id, ts, value) "
                "SELECT s.series_id, $1::bigint + k * $2::bigint, (k + s.series_id % 1000)::float8 "
                "FROM ts.series s, generate_series(0, $3::int - 1) AS k WHERE s.tenant_id = 'prefill' "
                "ORDER BY 1, 2",
                start,
                STEP_NS,
                per_series,
            )
            for table, width in (("rollup_1m", 60_000_000_000), ("rollup_1h", 3_600_000_000_000)):
                await conn.execute(
                    f"INSERT INTO ts.{table} (series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last) "  # nosec B608
                    f"SELECT series_id, ts / {width} * {width}, count(*), sum(value), min(value), max(value), "
                    "min(ts), (array_agg(value ORDER BY ts))[1], max(ts), (array_agg(value ORDER BY ts DESC))[1] "
                    f"FROM ts.points GROUP BY 1, 2 ORDER BY 1, 2"
                )
        finally:
            await conn.close()
        admin = await asyncpg.connect(pg.dsn())
        try:
            await admin.execute("VACUUM ANALYZE")
            await admin.execute("CHECKPOINT")
        finally:
            await admin.close()
        pg.stop()
    except BaseException:
        pg.destroy()
        raise
    return pg.data
