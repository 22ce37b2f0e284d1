"""Read access to PostgreSQL: replicas first, primary as fallback, each behind a circuit breaker.

Every statement runs under the server-side ``statement_timeout``. The caller's gRPC deadline is
enforced by the interceptor cancelling the handler task; asyncpg answers that cancellation by
sending PostgreSQL a cancel request, so the server stops working on an abandoned query. Multi-statement reads run in one
``REPEATABLE READ READ ONLY`` transaction so rollups, pending ranges and raw points agree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from tsmesh_query.config import DatabaseConfig
from tsmesh_query.metrics import DB_FAILOVERS

log = logging.getLogger(__name__)

T = TypeVar("T")

CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    ConnectionError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release hook: these connections never change session state (settings come from
    ``server_settings``, nothing is SET, LISTENed or locked), so release skips asyncpg's default
    ``RESET ALL`` round trip. asyncpg still rolls back any transaction left open before this runs."""


class _Target:
    """One PostgreSQL server (a replica or the primary) with its lazily-created pool."""

    def __init__(self, name: str, dsn: str, cfg: DatabaseConfig) -> None:
        self.name = name
        self._dsn = dsn
        self._cfg = cfg
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()
        self.breaker = CircuitBreaker(
            f"postgres-{name}",
            failures=(*CONNECTION_FAILURES, TimeoutError),
            failure_threshold=cfg.breaker_threshold,
            reset_seconds=cfg.breaker_reset_s,
        )

    async def pool(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._dsn,
                    min_size=0,
                    max_size=self._cfg.pool_max,
                    timeout=self._cfg.connect_timeout_s,
                    command_timeout=self._cfg.statement_timeout_s,
                    max_inactive_connection_lifetime=60.0,
                    reset=_keep_session,
                    server_settings={
                        "application_name": "tsmesh-query",
                        "default_transaction_read_only": "on",
                        "statement_timeout": str(int(self._cfg.statement_timeout_s * 1000)),
                        # range statements sort and aggregate ~100k rows: keep that off disk
                        "work_mem": "32MB",
                    },
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()


class Database:
    """Routes reads to a healthy replica, then the primary; fails fast with UNAVAILABLE when all are down."""

    def __init__(self, cfg: DatabaseConfig) -> None:
        self._cfg = cfg
        self._replicas = [_Target(f"replica{i}", dsn, cfg) for i, dsn in enumerate(cfg.replica_urls)]
        self._primary = _Target("primary", cfg.primary_url, cfg)

    def _order(self) -> list[_Target]:
        healthy = [t for t in self._replicas if not t.breaker.is_open]
        return [*healthy, self._primary]

    async def read(
        self,
        fn: Callable[[asyncpg.Connection, float], Awaitable[T]],
        *,
        snapshot: bool = False,
    ) -> T:
        """Run ``fn(conn, timeout)`` on the first healthy server; ``snapshot`` wraps it in one REPEATABLE READ."""
        last: BaseException | None = None
        for target in self._order():

            async def attempt(target: _Target = target) -> T:
                pool = await target.pool()
                timeout = self._cfg.statement_timeout_s + 1.0
                waiting = asyncio.timeout(self._cfg.acquire_timeout_s)
                try:
                    async with waiting:
                        conn = await pool.acquire()
                except TimeoutError:
                    if waiting.expired():
                        raise ResourceExhausted(
                            "db_pool", "no database connection free; retry", retry_after_seconds=0.5
                        ) from None
                    raise
                try:
                    if not snapshot:
                        return await fn(conn, timeout)
                    async with conn.transaction(isolation="repeatable_read", readonly=True):
                        return await fn(conn, timeout)
                finally:
                    await pool.release(conn)

            try:
                return await target.breaker.call(attempt)
            except Unavailable as exc:
                last = exc
            except asyncpg.QueryCanceledError:
                raise DeadlineExceeded("query cancelled by statement_timeout") from None
            except (*CONNECTION_FAILURES, TimeoutError) as exc:  # type: ignore[misc]
                log.warning("postgres read failed", extra={"target": target.name, "error": type(exc).__name__})
                last = exc
            if target is not self._primary:
                DB_FAILOVERS.labels(target.name).inc()
        raise Unavailable("database unavailable") from last

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One statement outside an explicit transaction (a single statement is one snapshot)."""

        async def run(conn: asyncpg.Connection, timeout: float) -> list[asyncpg.Record]:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args, timeout=timeout)
            return rows

        return await self.read(run)

    async def cursor(self, sql: str, *args: Any, prefetch: int = 5000) -> AsyncIterator[asyncpg.Record]:
        """Rows of one statement through a server-side cursor, ``prefetch`` at a time, in one read-only
        snapshot on the first healthy server (no failover once rows flow): memory stays constant."""
        target = self._order()[0]
        pool = await target.pool()
        async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async for row in conn.cursor(sql, *args, prefetch=prefetch):
                yield row

    async def close(self) -> None:
        for target in (*self._replicas, self._primary):
            await target.close()
