"""Daily partitions of ``ts.points``: ``ts.points_pYYYYMMDD`` covering [day start, next day start) in ns."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
from collections.abc import Iterable
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

DAY_NS = 86_400 * 1_000_000_000
EPOCH = dt.date(1970, 1, 1)
PARTITION_RE = re.compile(r"^points_p(\d{8})$")


def day_of(ts_ns: int) -> int:
    """Days since the epoch of a nanosecond timestamp (floor)."""
    return ts_ns // DAY_NS


def partition_name(day: int) -> str:
    return f"points_p{(EPOCH + dt.timedelta(days=day)):%Y%m%d}"


def day_of_partition(name: str) -> int | None:
    match = PARTITION_RE.match(name)
    if match is None:
        return None
    return (dt.datetime.strptime(match.group(1), "%Y%m%d").date() - EPOCH).days


def today(now: dt.datetime | None = None) -> int:
    moment = now or dt.datetime.now(dt.UTC)
    return (moment.date() - EPOCH).days


class PartitionManager:
    """Creates day partitions ahead of time (and on demand for the writer), remembering known days."""

    def __init__(self) -> None:
        self._known: set[int] = set()

    def missing(self, days: Iterable[int]) -> list[int]:
        return [d for d in set(days) if d not in self._known]

    def forget(self, day: int) -> None:
        self._known.discard(day)

    def forget_all(self) -> None:
        """Drop the cached set (another replica may have dropped a partition): the next ``ensure`` re-creates."""
        self._known.clear()

    async def ensure(self, conn: Any, days: Iterable[int]) -> None:
        """Create the partitions of ``days`` that do not exist yet (idempotent, concurrency-safe)."""
        for day in sorted(self.missing(days)):
            lo = day * DAY_NS
            statement = (
                f"CREATE TABLE IF NOT EXISTS ts.{partition_name(day)} PARTITION OF ts.points "
                f"FOR VALUES FROM ({lo}) TO ({lo + DAY_NS})"
            )
            with contextlib.suppress(asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                await conn.execute(statement)
            self._known.add(day)

    async def ensure_window(self, conn: Any, past_days: int, ahead_days: int) -> int:
        """Partitions from ``past_days`` ago to ``ahead_days`` ahead of today; returns how many were missing."""
        now = today()
        days = range(now - past_days, now + ahead_days + 1)
        existing = await self.existing(conn)
        self._known |= existing
        missing = self.missing(days)
        await self.ensure(conn, missing)
        if missing:
            log.info("created partitions", extra={"count": len(missing)})
        return len(missing)

    async def existing(self, conn: Any) -> set[int]:
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'ts.points'::regclass"
        )
        return {d for r in rows if (d := day_of_partition(r["relname"])) is not None}
