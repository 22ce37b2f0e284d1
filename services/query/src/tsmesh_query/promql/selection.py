"""Stage 3: each selector of the plan resolved to the tenant's series through the label index.

SQL narrows by tenant, metric (when the selector names one) and non-empty equality matchers (GIN
``@>``); RE2 applies every matcher in Python, with the query service's regex limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import asyncpg
import orjson
import re2

from tsmesh_common.errors import InvalidArgument, ResourceExhausted
from tsmesh_query.config import QueryLimits
from tsmesh_query.promql.plan import Plan, SelectorKey
from tsmesh_query.promql.values import NAME, Labels, make_labels

STEP_VALUES_PER_POINT = 5  # values held per step (8 bytes + a mask byte) allowed per max_points
SERIES_BY_METRIC = """
SELECT series_id, metric, labels::text AS labels FROM ts.series
WHERE tenant_id = $1 AND metric = $2 AND labels @> $3::jsonb LIMIT $4
"""
SERIES_ANY_METRIC = """
SELECT series_id, metric, labels::text AS labels FROM ts.series
WHERE tenant_id = $1 AND labels @> $2::jsonb LIMIT $3
"""


@dataclass(frozen=True, slots=True)
class SelectedSeries:
    series_id: int
    labels: Labels  # with __name__


@dataclass(frozen=True)
class Selection:
    """Stage 3's output: the series of every selector of the plan."""

    plan: Plan
    by_selector: dict[SelectorKey, list[SelectedSeries]]


class CompiledMatcher:
    """One PromQL label matcher; regexes anchored and compiled by RE2 within the limits."""

    def __init__(self, name: str, op: str, value: str, limits: QueryLimits) -> None:
        self.name, self.op, self.value = name, op, value
        self.regex = None
        if op in ("=~", "!~"):
            if len(value) > limits.max_regex_length:
                raise InvalidArgument("query", f"regex longer than max_regex_length={limits.max_regex_length}")
            options = re2.Options()
            options.max_mem = limits.regex_max_mem
            options.log_errors = False
            options.never_capture = True
            try:
                self.regex = re2.compile(f"(?:{value})", options)
            except re2.error as exc:
                raise InvalidArgument("query", f"invalid or too complex regex {value!r} ({exc})") from None

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == "=":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.regex is not None
        hit = self.regex.fullmatch(actual) is not None
        return hit if self.op == "=~" else not hit


async def matching_series(
    conn: asyncpg.Connection, tenant: str, key: SelectorKey, limits: QueryLimits
) -> list[SelectedSeries]:
    """The tenant's series matching one selector's matchers, or RESOURCE_EXHAUSTED past ``max_series_scan``."""
    if len(key) > limits.max_matchers:
        raise InvalidArgument("query", f"more than max_matchers={limits.max_matchers} in a selector")
    matchers = [CompiledMatcher(n, op, v, limits) for n, op, v in key]
    metric = next((v for n, op, v in key if n == NAME and op == "="), None)
    contain = orjson.dumps({n: v for n, op, v in key if op == "=" and v and n != NAME}).decode()
    scan = limits.max_series_scan + 1
    if metric is not None:
        rows = await conn.fetch(SERIES_BY_METRIC, tenant, metric, contain, scan)
    else:
        rows = await conn.fetch(SERIES_ANY_METRIC, tenant, contain, scan)
    if len(rows) > limits.max_series_scan:
        raise ResourceExhausted("max_series_scan", f"a selector would scan more than {limits.max_series_scan} series")
    picked: list[SelectedSeries] = []
    for row in rows:
        labels = {**orjson.loads(row["labels"]), NAME: row["metric"]}
        if all(m.matches(labels) for m in matchers):
            picked.append(SelectedSeries(int(row["series_id"]), make_labels(labels)))
    return picked


async def select_series(conn: asyncpg.Connection, tenant: str, plan: Plan, limits: QueryLimits) -> Selection:
    """The series of each selector, or RESOURCE_EXHAUSTED naming the limit (checked before any sample is read)."""
    out: dict[SelectorKey, list[SelectedSeries]] = {}
    total = 0
    for key in plan.spans:
        out[key] = await matching_series(conn, tenant, key, limits)
        total += len(out[key])
        if total > limits.max_series:
            raise ResourceExhausted("max_series", f"the query selects more than {limits.max_series} series")
        if total * len(plan.timestamps) > limits.max_points * STEP_VALUES_PER_POINT:
            # each selected series becomes one value per step in memory
            raise ResourceExhausted(
                "max_points", f"{total} series x {len(plan.timestamps)} steps is too many values; narrow or coarsen"
            )
    return Selection(plan, out)
