"""The audit log: hash chain, append-only trigger, tamper detection (API and CLI), concurrent appends."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import asyncpg
import pytest

from tsmesh_auth.audit import AuditEvent, AuditLog


async def _seeded(migrated, n: int = 5) -> tuple[AuditLog, object]:
    pool = await asyncpg.create_pool(migrated.dsn("tsmesh_auth"), min_size=1, max_size=4)
    audit = AuditLog(pool)
    for i in range(n):
        await audit.append(AuditEvent("login", "failure", "t1", f"user{i}", "10.0.0.1", request_id=f"r{i}"))
    return audit, pool


async def test_chain_verifies_and_detects_a_direct_update(migrated) -> None:
    audit, pool = await _seeded(migrated)
    try:
        assert (await audit.verify()).ok and (await audit.verify()).rows == 5
        async with pool.acquire() as conn:
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("UPDATE auth.audit_log SET outcome = 'success' WHERE id = 3")
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute("DELETE FROM auth.audit_log WHERE id = 3")
        admin = await asyncpg.connect(migrated.admin_dsn)
        try:  # a superuser bypassing the trigger
            await admin.execute("SET session_replication_role = replica")
            await admin.execute("UPDATE auth.audit_log SET outcome = 'success' WHERE id = 3")
        finally:
            await admin.close()
        result = await audit.verify()
        assert not result.ok and result.first_bad_id == 3
    finally:
        await pool.close()


async def test_deleting_a_row_breaks_the_chain(migrated) -> None:
    audit, pool = await _seeded(migrated)
    try:
        admin = await asyncpg.connect(migrated.admin_dsn)
        try:
            await admin.execute("SET session_replication_role = replica")
            await admin.execute("DELETE FROM auth.audit_log WHERE id = 2")
        finally:
            await admin.close()
        result = await audit.verify()
        assert not result.ok and result.first_bad_id == 3
    finally:
        await pool.close()


async def test_concurrent_appends_keep_one_chain(migrated) -> None:
    audit, pool = await _seeded(migrated, 0)
    try:
        await asyncio.gather(*(audit.append(AuditEvent("token.create", "success", f"t{i}")) for i in range(40)))
        result = await audit.verify()
        assert result.ok and result.rows == 40
    finally:
        await pool.close()


async def test_verify_audit_cli_exits_1_on_tampering(migrated) -> None:
    _, pool = await _seeded(migrated)
    await pool.close()
    env = {**os.environ, "TSMESH_DATABASE_URL": migrated.dsn("tsmesh_auth"), "TSMESH_AUTH_BCRYPT_COST": "4"}
    cmd = [sys.executable, "-m", "tsmesh_auth", "admin", "verify-audit"]
    ok = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "ok (5 rows)" in ok.stdout
    admin = await asyncpg.connect(migrated.admin_dsn)
    try:
        await admin.execute("SET session_replication_role = replica")
        await admin.execute("UPDATE auth.audit_log SET actor = 'someone-else' WHERE id = 4")
    finally:
        await admin.close()
    broken = await asyncio.to_thread(subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and "row id 4" in broken.stderr
