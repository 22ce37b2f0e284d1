"""Where the ingest writer waits, seen from outside: PostgreSQL wait events and the writer's stage timings.

- :class:`WaitSampler` polls ``pg_stat_activity`` every ``interval`` seconds for the ingest role's
  connections and counts (state, statement, wait event) per sample: "no ingest connection busy" means the writer was
  not in the database at all (fetching from Kafka, decoding, bumping generations, committing
  offsets, or lingering; counted once per sample when no connection of the role is busy),
  ``idle in transaction`` that the database waited on the writer's Python
  between two statements of a transaction (after the statement shown), ``active`` the statement and what it waited on
  (``CPU`` when it waited on nothing: it was running).
- :func:`stage_seconds` reads the writer's histograms (``/metrics``): seconds spent in whole
  transactions and in their points COPY, and the number of transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.request
from collections import Counter
from typing import Any

SAMPLE_SQL = """
SELECT state, coalesce(wait_event_type || ':' || wait_event, 'CPU') AS wait,
       regexp_replace(query, '\\s+', ' ', 'g') AS query
FROM pg_stat_activity
WHERE usename = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


def statement_kind(query: str) -> str:
    """A short name of a writer statement (``COPY ts.points``, ``merge rollup_1m``, ...)."""
    q = query.strip()
    if m := re.match(r'COPY "?(\w+)"?\.?"?(\w*)"?', q, re.I):
        return "COPY " + ".".join(p for p in m.groups() if p)
    if m := re.search(r"INSERT INTO (ts\.\w+)", q, re.I):
        target = m.group(1)
        if "ingest_partial" in q:
            return "merge partials into rollup_1m/1h"
        return f"INSERT {target}"
    if q.upper().startswith(("COMMIT", "RELEASE", "SAVEPOINT", "BEGIN")):
        return q.split()[0].upper()
    return q[:40]


class WaitSampler:
    """Samples ``pg_stat_activity`` for one role until stopped; :attr:`counts` by (state, statement, wait)."""

    def __init__(self, dsn: str, role: str = "tsmesh_ingest", interval: float = 0.05) -> None:
        self._dsn = dsn
        self._role = role
        self._interval = interval
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self.samples = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WaitSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self._dsn)
        try:
            while True:
                busy = [r for r in await conn.fetch(SAMPLE_SQL, self._role) if r["state"] != "idle"]
                for row in busy:
                    # idle in transaction: the statement is the last one the transaction ran
                    what = statement_kind(row["query"] or "")
                    wait = row["wait"] if row["state"] == "active" else ""
                    self.counts[(row["state"] or "?", what, wait)] += 1
                if not busy:
                    self.counts[("no ingest connection busy", "", "")] += 1
                self.samples += 1
                await asyncio.sleep(self._interval)
        finally:
            await conn.close()

    def table(self, top: int = 12) -> list[str]:
        """Lines "share of samples  state  statement  wait", most frequent first (each busy
        connection counts once per sample, so shares can add up past 100%)."""
        n = max(1, self.samples)
        return [
            f"  {count / n:6.1%}  {state:<20} {what:<36} {wait}"
            for (state, what, wait), count in self.counts.most_common(top)
        ]


def _metric_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name} ([0-9.e+-]+)$", text, re.M))


def stage_seconds(metrics_ports: list[int]) -> dict[str, float]:
    """Writer stage totals so far: transaction seconds, points-COPY seconds, transactions, rows."""
    total: dict[str, float] = {"transaction_s": 0.0, "copy_s": 0.0, "transactions": 0.0, "rows": 0.0}
    for port in metrics_ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        total["transaction_s"] += _metric_sum(text, "tsmesh_ingest_writer_transaction_seconds_sum")
        total["copy_s"] += _metric_sum(text, "tsmesh_ingest_copy_seconds_sum")
        total["transactions"] += _metric_sum(text, "tsmesh_ingest_writer_batch_rows_count")
        total["rows"] += _metric_sum(text, "tsmesh_ingest_writer_batch_rows_sum")
    return total


def stage_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    return {k: after[k] - before[k] for k in after}
