"""Helpers and fixtures of the ingest tests: a migrated database, real ingest processes (in this event
loop) wired to the session broker with topics and a consumer group of their own, points."""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from aiokafka import AIOKafkaProducer
from testkit import eventually
from throwaway import ThrowawayPostgres
from tsmesh.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc

from tsmesh_common.server import create_server
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.migrate import upgrade
from tsmesh_ingest.runtime import IngestRuntime, build_runtime
from tsmesh_ingest.store import WriterHooks
from tsmesh_ingest.topics import create_topics

REDIS_URL = os.environ.get("TSMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_CTL = "/usr/lib/postgresql/15/bin/pg_ctl"


def ingest_env(db_dsn: str, bootstrap: str, **extra: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        "TSMESH_GRPC_PORT": "0",
        "TSMESH_METRICS_PORT": "0",
        "TSMESH_DATABASE_URL": db_dsn,
        "TSMESH_REDIS_URL": REDIS_URL,
        "TSMESH_KAFKA_BOOTSTRAP": bootstrap,
        "TSMESH_KAFKA_TOPIC": f"tsmesh.points.test-{suffix}",
        "TSMESH_KAFKA_DLQ_TOPIC": f"tsmesh.points.dlq.test-{suffix}",
        "TSMESH_KAFKA_GROUP": f"writer-test-{suffix}",
        "TSMESH_KAFKA_REQUEST_TIMEOUT_MS": "3000",
        "TSMESH_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "TSMESH_WRITER_MAX_WAIT_MS": "20",
        "TSMESH_ROLLUP_INTERVAL_MS": "50",
        "TSMESH_WRITER_RETRY_MAX_SECONDS": "0.5",
    }
    env.update(extra)
    return env


@dataclass
class Ingest:
    """A running ingest process: its runtime, a channel to it and helpers."""

    runtime: IngestRuntime
    channel: grpc.aio.Channel
    cfg: IngestConfig
    mint: Any
    db: Any

    @property
    def stub(self) -> ingest_pb2_grpc.IngestServiceStub:
        return ingest_pb2_grpc.IngestServiceStub(self.channel)

    def auth(self, tenant_id: str, scopes: str = "write") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.mint.token(tenant_id, scopes)}"),)

    async def write(self, tenant_id: str, points: list[common_pb2.Point], timeout: float = 10.0) -> Any:
        return await self.stub.WriteBatch(
            ingest_pb2.WriteRequest(points=points), metadata=self.auth(tenant_id), timeout=timeout
        )

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        assert self.db is not None
        conn = await asyncpg.connect(self.db.admin_dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    async def produce_raw(self, value: bytes, partition: int = 0) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.cfg.kafka.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(self.cfg.kafka.topic, value, partition=partition)
        finally:
            await producer.stop()


def point(metric: str, ts_ns: int, value: float, **labels: str) -> common_pb2.Point:
    return common_pb2.Point(metric=metric, labels=labels, timestamp_ns=ts_ns, value=value)


# Fixtures: test modules import them by name (a conftest.py here would shadow the root one).
@pytest.fixture
async def ts_db(database: Any) -> Any:
    """The throwaway database with schema ts migrated by role tsmesh_ingest."""
    await asyncio.to_thread(upgrade, database.dsn("tsmesh_ingest"))
    return database


@pytest.fixture
async def own_postgres() -> AsyncIterator[ThrowawayPostgres]:
    """A private PostgreSQL cluster (to stop and start), schema ts migrated. Synchronous commits: an
    immediate stop is a crash, and an asynchronous commit the writer saw return could be lost with it."""
    pg = await asyncio.to_thread(ThrowawayPostgres, {"synchronous_commit": "on"})
    try:
        await asyncio.to_thread(upgrade, pg.dsn("tsmesh_ingest"))
        yield pg
    finally:
        await asyncio.to_thread(pg.destroy)


def pg_stop(pg: ThrowawayPostgres, mode: str = "fast") -> None:
    """Stop a private cluster in ``mode`` (fast: sessions terminated; immediate: a crash)."""
    args = [PG_CTL, "-D", str(pg.data), "-m", mode, "-w", "stop"]
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=pg.dir)


StartIngest = Callable[..., Awaitable[Ingest]]


@pytest.fixture
async def start_ingest(broker: Any, token_mint: Any, redis_client: Any) -> AsyncIterator[StartIngest]:
    """Start ingest processes on demand: ``await start_ingest(db, hooks=..., env=..., redis=client)``."""
    started: list[Ingest] = []

    async def start(
        db: Any | None,
        *,
        hooks: WriterHooks | None = None,
        env: dict[str, str] | None = None,
        dsn: str | None = None,
        bootstrap: str | None = None,
        audit: Any = None,
        redis: Any = None,
    ) -> Ingest:
        database_url = dsn or (db.dsn("tsmesh_ingest") if db is not None else "postgresql://nobody@127.0.0.1:1/none")
        environ = ingest_env(database_url, bootstrap or broker.bootstrap, **(env or {}))
        cfg = IngestConfig.from_env(environ)
        if bootstrap is None:
            await create_topics(cfg.kafka)
        runtime = await build_runtime(cfg, token_mint.authenticator(), redis or redis_client, hooks=hooks, audit=audit)
        port = await create_server(runtime.app, cfg.common)
        await runtime.start()
        if bootstrap is None:  # the session broker is up: write only once the producer is connected
            await eventually(lambda: runtime.ready, timeout=30)
        ingest = Ingest(runtime, grpc.aio.insecure_channel(f"127.0.0.1:{port}"), cfg, token_mint, db)
        started.append(ingest)
        return ingest

    yield start
    for ingest in reversed(started):
        await ingest.channel.close()
        await ingest.runtime.app.stop(0.2)
