"""The PromQL orchestrator: parse -> plan -> select series -> fetch samples -> evaluate -> encode,
each stage a module, values passed forward."""

from __future__ import annotations

import asyncio
import time

import asyncpg

from tsmesh_common.errors import DeadlineExceeded
from tsmesh_query.config import QueryLimits
from tsmesh_query.promql.encode import Result, encode
from tsmesh_query.promql.evaluate import Evaluator
from tsmesh_query.promql.fetch import fetch_samples
from tsmesh_query.promql.parse import parse_query
from tsmesh_query.promql.plan import Plan, plan_query
from tsmesh_query.promql.selection import STEP_VALUES_PER_POINT, select_series
from tsmesh_query.promql.values import SampleSet
from tsmesh_query.store import Database

DEFAULT_TIMEOUT_S = 30.0


class PromEngine:
    """Runs PromQL range and instant queries for one tenant at a time."""

    def __init__(
        self, db: Database, limits: QueryLimits, timeout_s: float = DEFAULT_TIMEOUT_S, rollups: bool = True
    ) -> None:
        """``rollups``: read 1-minute rollups where they answer exactly (off: raw samples only)."""
        self._db = db
        self._limits = limits
        self._timeout_s = timeout_s
        self._rollups = rollups

    async def query_range(
        self, tenant: str, query: str, start_ms: int, end_ms: int, step_ms: int, timeout_s: float = 0.0
    ) -> Result:
        plan = plan_query(parse_query(query), start_ms, end_ms, step_ms, rollups=self._rollups)
        return await self._run(tenant, plan, False, timeout_s)

    async def query(self, tenant: str, query: str, at_ms: int, timeout_s: float = 0.0) -> Result:
        plan = plan_query(parse_query(query), at_ms, at_ms, 1, instant=True, rollups=self._rollups)
        return await self._run(tenant, plan, True, timeout_s)

    async def _run(self, tenant: str, plan: Plan, instant: bool, timeout_s: float) -> Result:
        """``timeout_s`` (0: the engine's default, never more) bounds the whole query."""
        budget = min(timeout_s, self._timeout_s) if timeout_s > 0 else self._timeout_s
        deadline = time.monotonic() + budget

        async def read(conn: asyncpg.Connection, timeout: float) -> SampleSet:
            selection = await select_series(conn, tenant, plan, self._limits)
            return await fetch_samples(conn, selection, self._limits)

        try:
            async with asyncio.timeout(budget):
                samples = await self._db.read(read, snapshot=True)
        except TimeoutError:
            raise DeadlineExceeded("query timed out in series selection or sample fetching") from None
        max_values = self._limits.max_points * STEP_VALUES_PER_POINT
        value = Evaluator(plan, samples, deadline, max_values).run()
        return encode(value, plan.timestamps, instant, plan.expr)
