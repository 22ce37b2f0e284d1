"""Database connections of the writer process: which failures are transient, and one connection
per operation that is discarded, never pooled again, once it has seen a connection-level error.

A connection that failed mid-protocol (the server went away while a statement or its rollback was
in flight) can be left in a state asyncpg refuses to leave: the next statement on it raises
``InternalClientError: cannot switch to state ..; another operation .. is in progress``. Released
into the pool, it would poison whichever operation acquires it next (a write after a failed rollup
refresh, ADR 0209). :func:`operation` terminates such a connection instead, so every retry runs on
a fresh one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57", "40", "58")
CONNECTION_SQLSTATE_CLASSES = ("08", "57")


def is_connection_error(exc: BaseException) -> bool:
    """The connection itself failed (client-side protocol state, socket, timeout, server shutdown):
    the connection must be discarded, and the operation retried on a fresh one."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in CONNECTION_SQLSTATE_CLASSES
    return isinstance(
        exc,
        OSError | TimeoutError | ConnectionError | asyncpg.InterfaceError | asyncpg.exceptions.InternalClientError,
    )


def is_transient(exc: BaseException) -> bool:
    """Failures worth retrying as they are: connection-level ones, and server-side shortage,
    shutdown and conflicts (SQLSTATE classes 08, 53, 57, 40, 58)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in TRANSIENT_SQLSTATE_CLASSES
    return is_connection_error(exc)


@asynccontextmanager
async def operation(pool: Any) -> AsyncIterator[Any]:
    """A pooled connection for one operation; terminated rather than returned to the pool when the
    operation failed at the connection level (see the module docstring)."""
    async with pool.acquire() as conn:
        try:
            yield conn
        except BaseException as exc:
            if is_connection_error(exc) or not isinstance(exc, Exception):
                conn.terminate()
            raise
