"""Fixtures of the ingest tests: a migrated database and real ingest processes (in this event loop)
wired to the session broker, each with topics and a consumer group of its own (helpers: ingest_harness)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from ingest_harness import Ingest, ingest_env

from tsmesh_common.server import create_server
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.migrate import upgrade
from tsmesh_ingest.runtime import build_runtime
from tsmesh_ingest.store import WriterHooks
from tsmesh_ingest.topics import create_topics


@pytest.fixture
async def ts_db(database: Any) -> Any:
    """The throwaway database with schema ts migrated by role tsmesh_ingest."""
    await asyncio.to_thread(upgrade, database.dsn("tsmesh_ingest"))
    return database


StartIngest = Callable[..., Awaitable[Ingest]]


@pytest.fixture
async def start_ingest(broker: Any, token_mint: Any, redis_client: Any) -> AsyncIterator[StartIngest]:
    """Start ingest processes on demand: ``await start_ingest(db, hooks=..., **env)``."""
    started: list[Ingest] = []

    async def start(
        db: Any | None,
        *,
        hooks: WriterHooks | None = None,
        env: dict[str, str] | None = None,
        dsn: str | None = None,
        bootstrap: str | None = None,
    ) -> Ingest:
        database_url = dsn or (db.dsn("tsmesh_ingest") if db is not None else "postgresql://nobody@127.0.0.1:1/none")
        environ = ingest_env(database_url, bootstrap or broker.bootstrap, **(env or {}))
        cfg = IngestConfig.from_env(environ)
        if bootstrap is None:
            await create_topics(cfg.kafka)
        runtime = await build_runtime(cfg, token_mint.authenticator(), redis_client, hooks=hooks)
        port = await create_server(runtime.app, cfg.common)
        await runtime.start()
        ingest = Ingest(runtime, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), cfg, token_mint, db)
        started.append(ingest)
        return ingest

    yield start
    for ingest in reversed(started):
        await ingest.channel.close()
        await ingest.runtime.app.stop(0.2)
