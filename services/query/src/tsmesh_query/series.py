"""Resolve a selector to the caller's series: SQL narrows by tenant, metric and equality
matchers (GIN ``@>``), RE2 applies the rest in Python. Limits are checked before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
import orjson

from tsmesh_common.errors import ResourceExhausted
from tsmesh_query.config import QueryLimits
from tsmesh_query.selectors import Selector
from tsmesh_query.sql import series_sql


@dataclass(frozen=True, slots=True)
class SeriesRow:
    """One series of the caller's tenant."""

    series_id: int
    labels: dict[str, str]


async def resolve_series(
    conn: asyncpg.Connection,
    timeout: float,
    tenant: str,
    selector: Selector,
    limits: QueryLimits,
    stop_at: int | None = None,
) -> list[SeriesRow]:
    """The tenant's series matching ``selector`` (ascending id), or RESOURCE_EXHAUSTED naming the limit.

    With ``stop_at`` (listing), the first ``stop_at`` matches are returned instead of refusing.
    """
    containment = selector.sql_containment()
    args: list[object] = [tenant, selector.metric, limits.max_series_scan + 1]
    if containment:
        args.append(orjson.dumps(containment).decode())
    rows = await conn.fetch(series_sql(bool(containment)), *args, timeout=timeout)
    if len(rows) > limits.max_series_scan:
        raise ResourceExhausted(
            "max_series_scan", f"selector would scan more than {limits.max_series_scan} series; narrow it"
        )
    matched: list[SeriesRow] = []
    for row in rows:
        labels = orjson.loads(row["labels"])
        if selector.matches(labels):
            matched.append(SeriesRow(int(row["series_id"]), labels))
            if stop_at is not None and len(matched) >= stop_at:
                return matched
            if len(matched) > limits.max_series:
                raise ResourceExhausted("max_series", f"selector matches more than {limits.max_series} series")
    return matched
