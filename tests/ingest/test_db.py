"""Which database failures the writer retries, and that a connection which failed at the
connection level never goes back to the pool (ADR 0209)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncpg
import pytest

from tsmesh_ingest.db import is_connection_error, is_transient, operation

CONNECTION_LEVEL = [
    asyncpg.exceptions.InternalClientError("cannot switch to state 15; another operation (2) is in progress"),
    asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    asyncpg.InterfaceError("cannot perform operation: another operation is in progress"),
    asyncpg.CannotConnectNowError("the database system is shutting down"),
    asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    ConnectionResetError(104, "Connection reset by peer"),
    OSError(111, "Connect call failed"),
    socket.gaierror(-2, "Name or service not known"),
    TimeoutError(),
]


@pytest.mark.parametrize("exc", CONNECTION_LEVEL, ids=lambda e: type(e).__name__)
def test_connection_level_errors_are_transient_and_discard_the_connection(exc: BaseException) -> None:
    assert is_connection_error(exc)
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [asyncpg.DeadlockDetectedError("deadlock"), asyncpg.OutOfMemoryError("oom"), asyncpg.DiskFullError("full")],
    ids=lambda e: type(e).__name__,
)
def test_server_side_shortages_are_retried_on_the_same_connection(exc: BaseException) -> None:
    assert is_transient(exc)
    assert not is_connection_error(exc)


@pytest.mark.parametrize(
    "exc",
    [asyncpg.UniqueViolationError("dup"), asyncpg.UntranslatableCharacterError("nul"), ValueError("bug")],
    ids=lambda e: type(e).__name__,
)
def test_content_errors_and_bugs_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)
    assert not is_connection_error(exc)


@pytest.mark.integration
async def test_a_connection_that_failed_at_the_connection_level_is_not_pooled_again(database: Any) -> None:
    pool = await asyncpg.create_pool(database.dsn(), min_size=1, max_size=1)
    try:
        async with operation(pool) as conn:
            first_pid = conn.get_server_pid()
        with pytest.raises(asyncpg.exceptions.InternalClientError):
            async with operation(pool) as conn:
                assert conn.get_server_pid() == first_pid
                raise asyncpg.exceptions.InternalClientError("cannot switch to state 15")
        async with operation(pool) as conn:
            assert conn.get_server_pid() != first_pid
            assert await conn.fetchval("SELECT 1") == 1
        with pytest.raises(asyncpg.UniqueViolationError):
            async with operation(pool) as conn:
                second_pid = conn.get_server_pid()
                raise asyncpg.UniqueViolationError("content, not connection")
        async with operation(pool) as conn:
            assert conn.get_server_pid() == second_pid
    finally:
        await asyncio.wait_for(pool.close(), 10)
