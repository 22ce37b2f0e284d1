"""Latest, ListSeries and LabelValues: selector resolution plus one small statement each."""

from __future__ import annotations

import asyncpg
import orjson
from tsmesh.v1 import common_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits
from tsmesh_query.selectors import MAX_NAME_LENGTH, Selector
from tsmesh_query.series import SeriesRow, resolve_series
from tsmesh_query.store import Database

LATEST_SQL = """
SELECT s.id AS series_id, p.ts, p.value
FROM unnest($1::bigint[]) AS s(id)
CROSS JOIN LATERAL (
  SELECT ts, value FROM ts.points WHERE series_id = s.id ORDER BY ts DESC LIMIT 1
) AS p
"""

LABEL_VALUES_SQL = """
SELECT DISTINCT labels->>$2 AS v FROM ts.series
WHERE tenant_id = $1 AND labels ? $2
ORDER BY v LIMIT $3
"""


class Lookups:
    """Series metadata and last points of the caller's tenant."""

    def __init__(self, db: Database, limits: QueryLimits) -> None:
        self._db = db
        self._limits = limits

    async def latest(self, tenant: str, selector: Selector) -> list[common_pb2.Point]:
        async def run(conn: asyncpg.Connection, timeout: float) -> list[common_pb2.Point]:
            series = await resolve_series(conn, timeout, tenant, selector, self._limits)
            by_id = {s.series_id: s for s in series}
            rows = await conn.fetch(LATEST_SQL, list(by_id), timeout=timeout)
            points = [
                common_pb2.Point(
                    metric=selector.metric,
                    labels=by_id[r["series_id"]].labels,
                    timestamp_ns=r["ts"],
                    value=r["value"],
                )
                for r in rows
            ]
            points.sort(key=lambda p: orjson.dumps(dict(p.labels), option=orjson.OPT_SORT_KEYS))
            return points

        return await self._db.read(run, snapshot=True)

    async def list_series(self, tenant: str, selector: Selector, limit: int) -> list[SeriesRow]:
        if limit < 0 or limit > self._limits.max_list_limit:
            raise InvalidArgument("limit", f"must be 0..{self._limits.max_list_limit} (0 = the maximum)")
        wanted = limit or self._limits.max_list_limit

        async def run(conn: asyncpg.Connection, timeout: float) -> list[SeriesRow]:
            return await resolve_series(conn, timeout, tenant, selector, self._limits, stop_at=wanted)

        return await self._db.read(run)

    async def label_values(self, tenant: str, label: str, selector: Selector | None) -> list[str]:
        if not label or len(label) > MAX_NAME_LENGTH:
            raise InvalidArgument("label", f"must be 1..{MAX_NAME_LENGTH} characters")
        limit = self._limits.max_list_limit
        if selector is None:
            rows = await self._db.fetch(LABEL_VALUES_SQL, tenant, label, limit)
            return [r["v"] for r in rows if r["v"]]

        async def run(conn: asyncpg.Connection, timeout: float) -> list[str]:
            series = await resolve_series(conn, timeout, tenant, selector, self._limits)
            return sorted({v for s in series if (v := s.labels.get(label))})[:limit]

        return await self._db.read(run)
