"""The metadata side of the Prometheus API: series, label names and label values, optionally
narrowed by ``match[]`` selectors (parsed by the same parser) and a time range."""

from __future__ import annotations

import asyncpg

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits
from tsmesh_query.promql import ast
from tsmesh_query.promql.parse import parse_query
from tsmesh_query.promql.selection import SelectedSeries, matching_series
from tsmesh_query.promql.values import NAME, Labels
from tsmesh_query.store import Database

NS_PER_MS = 1_000_000
WITH_POINTS_SQL = """
SELECT id FROM unnest($1::bigint[]) AS id
WHERE EXISTS (SELECT 1 FROM ts.points WHERE series_id = id AND ts >= $2 AND ts <= $3)
"""
LABEL_NAMES_SQL = "SELECT DISTINCT jsonb_object_keys(labels) AS name FROM ts.series WHERE tenant_id = $1"
METRIC_NAMES_SQL = "SELECT DISTINCT metric AS value FROM ts.series WHERE tenant_id = $1"
LABEL_VALUES_SQL = "SELECT DISTINCT labels->>$2 AS value FROM ts.series WHERE tenant_id = $1 AND labels ? $2"


def parse_matchers(match: list[str]) -> list[ast.VectorSelector]:
    """``match[]`` strings as selectors; anything but a plain series selector is INVALID_ARGUMENT."""
    selectors = []
    for i, text in enumerate(match):
        expr = parse_query(text)
        if not isinstance(expr, ast.VectorSelector) or expr.offset_ms or expr.at is not None:
            raise InvalidArgument(f"match[{i}]", 'must be a series selector such as up{job="api"}')
        selectors.append(expr)
    return selectors


class Catalog:
    """Series, label names and label values of one tenant."""

    def __init__(self, db: Database, limits: QueryLimits) -> None:
        self._db = db
        self._limits = limits

    async def series(self, tenant: str, match: list[str], start_ms: int, end_ms: int, limit: int) -> list[Labels]:
        if not match:
            raise InvalidArgument("match[]", "at least one match[] selector is required")
        selectors = parse_matchers(match)

        async def read(conn: asyncpg.Connection, timeout: float) -> list[SelectedSeries]:
            return await self._matching(conn, tenant, selectors, start_ms, end_ms)

        found = await self._db.read(read)
        labels = sorted({s.labels for s in found})
        return labels[: self._limit(limit)]

    async def label_names(self, tenant: str, match: list[str], start_ms: int, end_ms: int, limit: int) -> list[str]:
        if match:
            selectors = parse_matchers(match)

            async def matched(conn: asyncpg.Connection, timeout: float) -> list[SelectedSeries]:
                return await self._matching(conn, tenant, selectors, start_ms, end_ms)

            names = {name for s in await self._db.read(matched) for name, _ in s.labels}
        else:

            async def read(conn: asyncpg.Connection, timeout: float) -> set[str]:
                rows = await conn.fetch(LABEL_NAMES_SQL, tenant, timeout=timeout)
                return {str(r["name"]) for r in rows} | {NAME}

            names = await self._db.read(read)
        return sorted(names)[: self._limit(limit)]

    async def label_values(
        self, tenant: str, label: str, match: list[str], start_ms: int, end_ms: int, limit: int
    ) -> list[str]:
        if not label:
            raise InvalidArgument("label", "is required")
        if match:
            selectors = parse_matchers(match)

            async def matched(conn: asyncpg.Connection, timeout: float) -> list[SelectedSeries]:
                return await self._matching(conn, tenant, selectors, start_ms, end_ms)

            values = {dict(s.labels).get(label, "") for s in await self._db.read(matched)} - {""}
        else:

            async def read(conn: asyncpg.Connection, timeout: float) -> set[str]:
                if label == NAME:
                    rows = await conn.fetch(METRIC_NAMES_SQL, tenant, timeout=timeout)
                else:
                    rows = await conn.fetch(LABEL_VALUES_SQL, tenant, label, timeout=timeout)
                return {str(r["value"]) for r in rows if r["value"]}

            values = await self._db.read(read)
        return sorted(values)[: self._limit(limit)]

    def _limit(self, limit: int) -> int:
        return min(limit, self._limits.max_list_limit) if limit > 0 else self._limits.max_list_limit

    async def _matching(
        self,
        conn: asyncpg.Connection,
        tenant: str,
        selectors: list[ast.VectorSelector],
        start_ms: int,
        end_ms: int,
    ) -> list[SelectedSeries]:
        """Series matching any selector; with a time range, only those with a sample in it."""
        found: dict[int, SelectedSeries] = {}
        for selector in selectors:
            for s in await matching_series(conn, tenant, selector.matchers, self._limits):
                found[s.series_id] = s
        if end_ms > 0 and found:
            rows = await conn.fetch(
                WITH_POINTS_SQL, list(found), start_ms * NS_PER_MS, end_ms * NS_PER_MS + NS_PER_MS - 1
            )
            keep = {int(r["id"]) for r in rows}
            return [s for sid, s in found.items() if sid in keep]
        return list(found.values())
