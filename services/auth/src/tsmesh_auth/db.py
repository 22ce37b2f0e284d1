"""The asyncpg connection pool of the auth service."""

from __future__ import annotations

from typing import Any

import asyncpg

from tsmesh_common.errors import Unavailable


async def create_pool(database_url: str, max_size: int = 10) -> Any:
    """A pool on ``database_url``; a clear :class:`Unavailable` when PostgreSQL cannot be reached."""
    try:
        return await asyncpg.create_pool(
            database_url, min_size=1, max_size=max_size, command_timeout=10, server_settings={"search_path": "auth"}
        )
    except (OSError, asyncpg.PostgresError) as exc:
        raise Unavailable(f"database unreachable ({type(exc).__name__}; check TSMESH_DATABASE_URL)") from None
