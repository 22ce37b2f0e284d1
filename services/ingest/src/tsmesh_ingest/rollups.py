"""Continuous aggregates: ``ts.rollup_1m`` and ``ts.rollup_1h`` refreshed from ``ts.rollup_pending``.

Points the writer stored on its fast path (every (series, ts) new) are merged into both rollups by
the writer itself, in the points' own transaction, from partial aggregates (``store.py``, ADR 0205).
Only the conflict-tolerant path (redeliveries, rewrites, duplicates within a batch) leaves pending
ranges: their points may already be counted, so the buckets they cover are recomputed from raw.

One refresh is one transaction: claim (delete) up to ``batch`` pending ranges, recompute every 1m
bucket they cover from ``ts.points``, then every covering 1h bucket from those exact 1m buckets,
and commit. Recomputing (never incrementing) makes late, out-of-order and redelivered points
converge to the exact answer. A concurrent fast-path merge into a bucket being recomputed either
waits on the row the refresh deleted or inserted (and then merges onto the recomputed row, which
could not see its uncommitted points) or makes the refresh's INSERT fail on the key (the pass rolls
back, its ranges stay pending, the next pass retries): never a lost or doubled partial.
A transaction-level advisory lock keeps refreshers of several writer replicas from updating the
same buckets at once. A pass is bounded (``batch`` pending ranges, default 500,000) and ``run``
repeats passes back to back while a backlog remains, every ``interval_seconds`` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg

from tsmesh_ingest.db import operation
from tsmesh_ingest.metrics import ROLLUP_BUCKETS, ROLLUP_COMMIT_LAG, ROLLUP_LAG, ROLLUP_PENDING, ROLLUP_SECONDS

log = logging.getLogger(__name__)

ADVISORY_KEY = 0x7473_6D65_7368_0001  # "tsmesh" + 1

# Bucket widths are literals: 1m = 60000000000 ns, 1h = 3600000000000 ns.
# The claim deletes by id range (about twice as fast as row locks + SKIP LOCKED): the advisory lock
# already excludes other refreshers, and a range of a writer transaction not yet committed is
# invisible to the DELETE, so it stays for a later pass. Claimed ranges of a series covering the
# same first and last minute merge into one (same buckets, min lo, max hi).
# The buckets to recompute go to a table of their own, analyzed, so the plan fits their real number
# (often a handful: a misestimate made the planner spend seconds on one bucket, ADR 0233).
# A 1m bucket's ``ascending`` and ``distinct_ms`` (migration 0003) compare each point with the one
# before it in the bucket; 1h buckets leave them NULL (unused).
REFRESH_SQL = (
    "CREATE TEMP TABLE IF NOT EXISTS rollup_claim (series_id bigint, lo bigint, hi bigint, created_at timestamptz) "
    "ON COMMIT DELETE ROWS",
    """
    WITH claimed AS (
        DELETE FROM ts.rollup_pending
        WHERE id <= (SELECT max(id) FROM (SELECT id FROM ts.rollup_pending ORDER BY id LIMIT $1) AS first_ids)
        RETURNING series_id, lo, hi, created_at
    )
    INSERT INTO rollup_claim
    SELECT series_id, min(lo), max(hi), min(created_at) FROM claimed
    GROUP BY series_id, lo - ((lo % 60000000000) + 60000000000) % 60000000000,
             hi - ((hi % 60000000000) + 60000000000) % 60000000000
    """,
    "CREATE TEMP TABLE IF NOT EXISTS rollup_r1m (series_id bigint, bucket bigint) ON COMMIT DELETE ROWS",
    """
    INSERT INTO rollup_r1m
    SELECT DISTINCT c.series_id, b
    FROM rollup_claim c,
         generate_series(c.lo - ((c.lo % 60000000000) + 60000000000) % 60000000000,
                         c.hi - ((c.hi % 60000000000) + 60000000000) % 60000000000,
                         60000000000::bigint) AS b
    """,
    "ANALYZE rollup_r1m",
    "DELETE FROM ts.rollup_1m r USING rollup_r1m b WHERE r.series_id = b.series_id AND r.bucket = b.bucket",
    """
    INSERT INTO ts.rollup_1m (series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last,
                              ascending, distinct_ms)
    SELECT a.series_id, a.bucket, a.count, a.sum, a.min, a.max, a.first_ts, f.value, a.last_ts, l.value,
           a.ascending, a.distinct_ms
    FROM (
        SELECT b.series_id, b.bucket, count(*) AS count, sum(p.value) AS sum, min(p.value) AS min,
               max(p.value) AS max, min(p.ts) AS first_ts, max(p.ts) AS last_ts,
               bool_and(p.prev_value IS NULL OR NOT p.value < p.prev_value) AS ascending,
               bool_and(p.prev_ts IS NULL OR p.ts - ((p.ts % 1000000) + 1000000) % 1000000
                        > p.prev_ts - ((p.prev_ts % 1000000) + 1000000) % 1000000) AS distinct_ms
        FROM rollup_r1m b
        CROSS JOIN LATERAL (
            SELECT q.ts, q.value, lag(q.value) OVER w AS prev_value, lag(q.ts) OVER w AS prev_ts
            FROM ts.points q
            WHERE q.series_id = b.series_id AND q.ts >= b.bucket AND q.ts < b.bucket + 60000000000
            WINDOW w AS (ORDER BY q.ts)
        ) p
        GROUP BY b.series_id, b.bucket
    ) a
    JOIN ts.points f ON f.series_id = a.series_id AND f.ts = a.first_ts
    JOIN ts.points l ON l.series_id = a.series_id AND l.ts = a.last_ts
    """,
    "CREATE TEMP TABLE IF NOT EXISTS rollup_b1h (series_id bigint, bucket bigint) ON COMMIT DELETE ROWS",
    """
    INSERT INTO rollup_b1h
    SELECT DISTINCT series_id, bucket - ((bucket % 3600000000000) + 3600000000000) % 3600000000000 FROM rollup_r1m
    """,
    "DELETE FROM ts.rollup_1h r USING rollup_b1h b WHERE r.series_id = b.series_id AND r.bucket = b.bucket",
    """
    INSERT INTO ts.rollup_1h (series_id, bucket, count, sum, min, max, first_ts, first, last_ts, last)
    SELECT b.series_id, b.bucket, sum(r.count), sum(r.sum), min(r.min), max(r.max),
           min(r.first_ts), (array_agg(r.first ORDER BY r.first_ts))[1],
           max(r.last_ts), (array_agg(r.last ORDER BY r.last_ts DESC))[1]
    FROM rollup_b1h b
    JOIN ts.rollup_1m r ON r.series_id = b.series_id AND r.bucket >= b.bucket AND r.bucket < b.bucket + 3600000000000
    GROUP BY b.series_id, b.bucket
    """,
)


def _saturating(numeric_sum: str) -> str:
    """A numeric sum as float8, saturated to +-Infinity instead of raising on overflow."""
    return (
        f"CASE WHEN {numeric_sum} = 'NaN'::numeric THEN 'NaN'::float8 "
        f"WHEN {numeric_sum} > 1.7976931348623157e308 THEN 'Infinity'::float8 "
        f"WHEN {numeric_sum} < -1.7976931348623157e308 THEN '-Infinity'::float8 "
        f"ELSE ({numeric_sum})::float8 END"
    )


# float8 sum() raises "value out of range: overflow" when finite values add past the float8 range.
# A statement that does is run again with these saturating (numeric) sums, so one tenant's huge
# values neither block every pass nor disagree with the writer's merge (store.SATURATING_SUM).
_SUMS = (
    ("sum(p.value) AS sum", _saturating("sum(p.value::numeric)") + " AS sum"),  # 1m from raw
    ("sum(r.sum),", _saturating("sum(r.sum::numeric)") + ","),  # 1h from 1m
)
OVERFLOW_SAFE_SQL = {
    i: statement.replace(plain, safe)
    for i, statement in enumerate(REFRESH_SQL)
    for plain, safe in _SUMS
    if plain in statement
}


class RollupRefresher:
    """Keeps the rollups current; ``refresh_once`` is the unit, ``run`` the periodic loop."""

    def __init__(self, pool: Any, *, batch: int = 500_000, interval_seconds: float = 0.1) -> None:
        self._pool = pool
        self._batch = batch
        self._interval = interval_seconds

    async def refresh_once(self) -> int:
        """Consume up to ``batch`` pending ranges; returns how many merged ranges it refreshed (0: idle/locked)."""
        start = time.perf_counter()
        async with operation(self._pool) as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ADVISORY_KEY):
                return 0
            # Each bucket reads a narrow (series_id, ts) range: index nested loops, never a scan of
            # every stored point (which a hash join over thousands of buckets would choose).
            await conn.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
            await conn.execute(REFRESH_SQL[0])
            status = await conn.execute(REFRESH_SQL[1], self._batch)
            consumed = int(status.split()[-1])
            if consumed == 0:
                ROLLUP_LAG.set(0)
                return 0
            await conn.execute(REFRESH_SQL[2])
            buckets = int((await conn.execute(REFRESH_SQL[3])).split()[-1])
            for i in range(4, len(REFRESH_SQL)):
                await self._execute(conn, i)
            oldest = await conn.fetchval(
                "SELECT extract(epoch FROM clock_timestamp() - min(created_at)) FROM rollup_claim"
            )
            committing = time.perf_counter()
        lag = float(oldest or 0.0) + (time.perf_counter() - committing)
        ROLLUP_BUCKETS.labels("recompute").inc(buckets)
        ROLLUP_LAG.set(lag)
        ROLLUP_COMMIT_LAG.observe(lag)
        ROLLUP_SECONDS.observe(time.perf_counter() - start)
        return consumed

    @staticmethod
    async def _execute(conn: Any, i: int) -> None:
        if i not in OVERFLOW_SAFE_SQL:
            await conn.execute(REFRESH_SQL[i])
            return
        try:
            async with conn.transaction():  # a savepoint: an overflow leaves the pass usable
                await conn.execute(REFRESH_SQL[i])
        except asyncpg.NumericValueOutOfRangeError:
            await conn.execute(OVERFLOW_SAFE_SQL[i])

    async def pending(self) -> int:
        async with operation(self._pool) as conn:
            return int(await conn.fetchval("SELECT count(*) FROM ts.rollup_pending"))

    async def run(self) -> None:
        """Refresh until cancelled: back-to-back while there is a backlog, every interval otherwise."""
        while True:
            try:
                consumed = await self.refresh_once()
                if consumed >= self._batch:
                    continue
                if consumed:
                    ROLLUP_PENDING.set(await self.pending())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be down; the pending log waits
                log.warning("rollup refresh failed, will retry", extra={"error": type(exc).__name__})
                await asyncio.sleep(1.0)
            await asyncio.sleep(self._interval)
