"""Concurrent migrations (several Jobs or pods at once) serialise on a PostgreSQL advisory lock:
every run exits 0 and the schema ends at head once.

To make the runs collide for certain, the test holds the (empty) version table locked until all three
are waiting on a lock, then lets them go together.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import asyncpg
import pytest
from testkit import eventually

RUNS = 3


async def _waiting(conn: asyncpg.Connection) -> bool:
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
        " WHERE NOT l.granted AND d.datname = current_database()"
    )
    return int(count) >= RUNS


async def _migrate_concurrently(module: str, dsn: str, schema: str) -> list[tuple[int, str]]:
    holder = await asyncpg.connect(dsn)
    await holder.execute(
        f"CREATE TABLE {schema}.alembic_version (version_num varchar(32) NOT NULL,"
        " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
    )
    gate = holder.transaction()
    await gate.start()
    await holder.execute(f"LOCK TABLE {schema}.alembic_version IN ACCESS EXCLUSIVE MODE")
    env = {**os.environ, "TSMESH_DATABASE_URL": dsn, "TSMESH_ENV": "dev"}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(RUNS)
    ]
    watcher = await asyncpg.connect(dsn)
    try:
        await eventually(lambda: _waiting(watcher), timeout=60)
    finally:
        await watcher.close()
        await gate.commit()
        await holder.close()
    results = []
    for proc in procs:
        _, err = await proc.communicate()
        results.append((proc.returncode or 0, err.decode(errors="replace")[-2000:]))
    return results


@pytest.mark.parametrize(
    ("module", "role", "schema"), [("tsmesh_auth", "tsmesh_auth", "auth"), ("tsmesh_ingest", "tsmesh_ingest", "ts")]
)
async def test_three_concurrent_migrations_all_exit_zero(database: Any, module: str, role: str, schema: str) -> None:
    results = await _migrate_concurrently(module, database.dsn(role), schema)
    assert [code for code, _ in results] == [0] * RUNS, [err for code, err in results if code]
    conn = await asyncpg.connect(database.admin_dsn)
    try:
        versions = await conn.fetch(f"SELECT version_num FROM {schema}.alembic_version")
    finally:
        await conn.close()
    assert len(versions) == 1
