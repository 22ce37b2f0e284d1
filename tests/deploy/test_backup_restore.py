"""Backup and restore on the real PostgreSQL: ``pg_dump -Fc`` of a database holding known points
and a user, ``pg_restore`` into a fresh database prepared by bootstrap.sql; then migrations are a
no-op, QueryRange answers are identical and login works with the same KEK and fails with another."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
import redis.asyncio as aioredis
from testkit import REDIS_URL, Database, create_database, drop_database, fresh_namespace
from tsmesh.v1 import auth_pb2, auth_pb2_grpc, common_pb2, query_pb2

from tsmesh_auth.app import build, create_app
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.db import create_pool
from tsmesh_auth.migrate import upgrade as upgrade_auth
from tsmesh_ingest.migrate import upgrade as upgrade_ts
from tsmesh_query.config import CacheConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from tsq_support import Loader, query_config, start_service, stop_service

PASSWORD = "correct-horse-battery-staple"
SECOND = 10**9


def _kek() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def _versions(db: Database) -> list[str]:
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        rows = await conn.fetch(
            "SELECT 'auth:' || version_num FROM auth.alembic_version UNION ALL"
            " SELECT 'ts:' || version_num FROM ts.alembic_version ORDER BY 1"
        )
        tables = await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname IN ('auth', 'ts')")
    finally:
        await conn.close()
    return [r[0] for r in rows] + [f"tables:{tables}"]


async def _migrate(db: Database) -> None:
    await asyncio.to_thread(upgrade_ts, db.dsn("tsmesh_ingest"))
    await asyncio.to_thread(upgrade_auth, db.dsn("tsmesh_auth"))


NAMESPACE = fresh_namespace().name  # the restored deployment's, before and after the restore


async def _login(db: Database, kek: str, tenant: str, email: str, *, create: bool = False) -> str:
    """Login through a real AuthService on ``db`` under ``kek`` in production mode (which refuses to
    start on signing keys it cannot decrypt); returns the access token."""
    cfg = AuthConfig.from_env(
        {
            "TSMESH_ENV": "production",
            "TSMESH_DATABASE_URL": db.dsn("tsmesh_auth"),
            "TSMESH_REDIS_URL": REDIS_URL,
            "TSMESH_REDIS_NAMESPACE": NAMESPACE,
            "TSMESH_AUTH_BCRYPT_COST": "4",
            "TSMESH_AUTH_KEK": kek,
            "TSMESH_GRPC_PORT": "0",
            "TSMESH_METRICS_PORT": "0",
        }
    )
    pool = await create_pool(cfg.database_url, 2)
    redis = aioredis.Redis.from_url(REDIS_URL)
    app = None
    try:
        parts = await build(cfg, pool, redis)
        if create:
            await parts.directory.create_tenant(tenant)
            await parts.directory.create_user(tenant, email, PASSWORD, "admin")
        app = create_app(parts, None)
        port = await app.start("127.0.0.1", 0)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            answer = await auth_pb2_grpc.AuthServiceStub(channel).Login(
                auth_pb2.LoginRequest(tenant=tenant, email=email, password=PASSWORD),
                metadata=(("x-client-address", f"restore-{uuid.uuid4().hex}"),),
                timeout=10,
            )
        return str(answer.tokens.access_token)
    finally:
        if app is not None:
            await app.stop(0.2)
        await pool.close()
        await redis.aclose()


async def _query(db: Database, token_mint: Any, tenant: str, start: int) -> bytes:
    running = await start_service(query_config(db, cache=CacheConfig(l2_enabled=False)), token_mint)
    try:
        answer = await running.stub.QueryRange(
            query_pb2.QueryRangeRequest(
                selector=common_pb2.Selector(metric="restore_probe"),
                start_ns=start,
                end_ns=start + 600 * SECOND,
                step_ns=60 * SECOND,
                aggregation=query_pb2.AGGREGATION_AVG,
                group_by=["host"],
            ),
            metadata=running.md(tenant),
            timeout=10,
        )
    finally:
        await stop_service(running)
    return bytes(answer.SerializeToString(deterministic=True))


def _pg(tool: str, *args: str) -> None:
    subprocess.run([tool, *args], check=True, capture_output=True, text=True, timeout=120)


async def test_dump_restore_keeps_points_schema_and_logins(database: Database, token_mint: Any, tmp_path: Path) -> None:
    await _migrate(database)
    tenant, email, kek = f"t-{uuid.uuid4().hex[:10]}", "ops@example.com", _kek()
    await _login(database, kek, tenant, email, create=True)
    conn = await asyncpg.connect(database.admin_dsn)
    try:
        tenant_id = str(await conn.fetchval("SELECT id::text FROM auth.tenants WHERE name = $1", tenant))
        await conn.execute("SET ROLE tsmesh_ingest")
        loader = Loader(conn)
        start = 1_704_067_200 * SECOND  # 2024-01-01: old enough to be immutable (cached)
        sids = []
        for host in ("a", "b"):
            sid = await loader.series(tenant_id, "restore_probe", {"host": host})
            sids.append(sid)
            await loader.points(
                [(sid, start + i * 10 * SECOND, float(i * (2 if host == "b" else 1))) for i in range(60)],
                pending=True,
            )
        await loader.refresh_rollups(sids)
    finally:
        await conn.close()
    before = await _query(database, token_mint, tenant_id, start)
    assert before.count(b"restore_probe") == 2
    versions = await _versions(database)

    dump = tmp_path / "tsmesh.dump"
    _pg("pg_dump", "-Fc", "-d", database.admin_dsn, "-f", str(dump))
    restored = await create_database()  # a fresh database with bootstrap.sql's roles and schemas
    try:
        _pg("pg_restore", "--clean", "--if-exists", "--exit-on-error", "-d", restored.admin_dsn, str(dump))
        await _migrate(restored)
        assert await _versions(restored) == versions
        assert await _query(restored, token_mint, tenant_id, start) == before
        assert await _login(restored, kek, tenant, email)
        with pytest.raises(Exception):  # noqa: B017 - whatever the failure, no token
            await _login(restored, _kek(), tenant, email)
    finally:
        await drop_database(restored)
