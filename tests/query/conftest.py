"""Query test fixtures (helpers live in ``tsq_support``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from tsq_support import Loader, Running, ensure_schema, query_config, start_service, stop_service


@pytest.fixture
async def ts_db(database: Any) -> AsyncIterator[Any]:
    await ensure_schema(database)
    yield database


@pytest.fixture
async def loader(ts_db: Any) -> AsyncIterator[Loader]:
    conn = await asyncpg.connect(ts_db.admin_dsn)
    await conn.execute("SET ROLE tsmesh_ingest")
    try:
        yield Loader(conn)
    finally:
        await conn.close()


@pytest.fixture
async def service(ts_db: Any, token_mint: Any) -> AsyncIterator[Running]:
    running = await start_service(query_config(ts_db), token_mint)
    try:
        yield running
    finally:
        await stop_service(running)
