"""Retention: whole raw partitions dropped past the longest raw retention, rollups trimmed past theirs.

Global defaults come from configuration; ``ts.tenant_retention`` overrides them per tenant (NULL
columns keep the default). A partition is dropped only once no tenant may keep it; rows of tenants
with a shorter retention than the partition's age are deleted from the partitions still kept.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from tsmesh_ingest.db import operation
from tsmesh_ingest.partitions import DAY_NS, PartitionManager, partition_name

log = logging.getLogger(__name__)

_OVERRIDDEN = (
    "SELECT 1 FROM ts.series s JOIN ts.tenant_retention t ON t.tenant_id = s.tenant_id "
    "WHERE s.series_id = x.series_id AND t.{column} IS NOT NULL"
)


@dataclass(frozen=True)
class RetentionDays:
    raw: int
    rollup_1m: int
    rollup_1h: int


@dataclass
class RetentionReport:
    dropped_partitions: list[str]
    deleted_rows: int


class Retention:
    """Applies the retention policy; ``run_once`` is idempotent and safe to call from any replica."""

    def __init__(self, pool: Any, partitions: PartitionManager, defaults: RetentionDays) -> None:
        self._pool = pool
        self._partitions = partitions
        self._defaults = defaults

    async def run_once(self, now_ns: int | None = None) -> RetentionReport:
        now = now_ns if now_ns is not None else time.time_ns()
        report = RetentionReport([], 0)
        async with operation(self._pool) as conn:
            overrides = await conn.fetch("SELECT * FROM ts.tenant_retention")
            longest_raw = max([self._defaults.raw, *[r["raw_days"] for r in overrides if r["raw_days"]]])
            drop_before = now - longest_raw * DAY_NS
            for day in sorted(await self._partitions.existing(conn)):
                if (day + 1) * DAY_NS <= drop_before:
                    name = partition_name(day)
                    await conn.execute(f"DROP TABLE IF EXISTS ts.{name}")
                    self._partitions.forget(day)
                    report.dropped_partitions.append(name)
            for table, column, default in (
                ("points", "raw_days", self._defaults.raw),
                ("rollup_1m", "rollup_1m_days", self._defaults.rollup_1m),
                ("rollup_1h", "rollup_1h_days", self._defaults.rollup_1h),
            ):
                time_column = "ts" if table == "points" else "bucket"
                overridden = _OVERRIDDEN.replace("{column}", column)
                per_tenant = "s.series_id = x.series_id AND s.tenant_id = $1"
                if table != "points" or longest_raw > default:
                    report.deleted_rows += _count(
                        await conn.execute(
                            (f"DELETE FROM ts.{table} x WHERE x.{time_column} < $1 AND NOT EXISTS ({overridden})"),  # noqa: S608  # nosec B608 # constant names
                            now - default * DAY_NS,
                        )
                    )
                for row in overrides:
                    days = row[column]
                    if days is None or (table == "points" and days >= longest_raw):
                        continue
                    report.deleted_rows += _count(
                        await conn.execute(
                            (f"DELETE FROM ts.{table} x USING ts.series s WHERE {per_tenant} AND x.{time_column} < $2"),  # noqa: S608  # nosec B608 # constant names
                            row["tenant_id"],
                            now - days * DAY_NS,
                        )
                    )
        if report.dropped_partitions or report.deleted_rows:
            log.info(
                "retention applied",
                extra={"partitions": len(report.dropped_partitions), "rows": report.deleted_rows},
            )
        return report


def _count(status: str) -> int:
    try:
        return int(status.split()[-1])
    except (ValueError, IndexError):
        return 0
