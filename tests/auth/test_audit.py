"""The audit log: MAC chain under the KEK, sealed table, signed checkpoints, tamper detection (API and CLI).

The tampering moves of issue 17 are made by the role that owns ``auth.audit_log``: ``tsmesh_auth``
itself before ADR 0107, ``tsmesh_audit_owner`` (a superset of the service role's rights) after it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import orjson
import pytest
from testkit import eventually

from tsmesh_auth import audit_checkpoints
from tsmesh_auth.audit import GENESIS, AuditEvent, AuditLog, legacy_hash
from tsmesh_auth.audit_checkpoints import Checkpointer, CheckpointExporter
from tsmesh_auth.audit_keys import AuditKeys
from tsmesh_auth.kek import KeyEncryption
from tsmesh_auth.migrate import upgrade_async
from tsmesh_common.logs import JsonFormatter

FIELDS = ("action", "outcome", "tenant_id", "actor", "client_address", "request_id", "detail")


@pytest.fixture
def kek() -> bytes:
    return os.urandom(32)


@pytest.fixture
def keys(kek: bytes) -> AuditKeys:
    return AuditKeys.from_kek(KeyEncryption(kek))


@pytest.fixture
async def pool(migrated: Any) -> AsyncIterator[Any]:
    pool = await asyncpg.create_pool(migrated.dsn("tsmesh_auth"), min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


async def _seeded(pool: Any, keys: AuditKeys, n: int = 5) -> AuditLog:
    audit = AuditLog(pool, keys)
    for i in range(n):
        await audit.append(AuditEvent("login", "failure", "t1", f"user{i}", "10.0.0.1", request_id=f"r{i}"))
    return audit


async def _checkpoint(audit: AuditLog, keys: AuditKeys, directory: Path) -> list[audit_checkpoints.Checkpoint]:
    assert await Checkpointer(audit.head, CheckpointExporter(keys, directory)).checkpoint()
    checkpoints, refused = audit_checkpoints.load([directory], keys)
    assert refused == []
    return checkpoints


async def _as_owner(migrated: Any) -> asyncpg.Connection:
    """A connection acting as the table's owner: whatever the owner may do, the attacker here may."""
    conn = await asyncpg.connect(migrated.admin_dsn)
    owner = await conn.fetchval("SELECT relowner::regrole::text FROM pg_class WHERE oid = 'auth.audit_log'::regclass")
    await conn.execute(f'SET ROLE "{owner}"')
    return conn


async def test_an_honest_chain_verifies_with_its_checkpoints(pool: Any, keys: AuditKeys, tmp_path: Path) -> None:
    audit = await _seeded(pool, keys, 5)
    await _checkpoint(audit, keys, tmp_path)
    await _seeded(pool, keys, 2)
    checkpoints = await _checkpoint(audit, keys, tmp_path)
    result = await audit.verify(checkpoints)
    assert result.ok, result.problems
    assert (result.rows, result.checkpoints) == (7, 2)
    assert sorted(c.row_id for c in checkpoints) == [5, 7]


async def test_the_service_role_can_neither_rewrite_nor_unseal_the_log(pool: Any, keys: AuditKeys) -> None:
    await _seeded(pool, keys, 3)
    async with pool.acquire() as conn:
        for statement in (
            "ALTER TABLE auth.audit_log DISABLE TRIGGER audit_log_append_only",
            "DROP TRIGGER audit_log_append_only ON auth.audit_log",
            "UPDATE auth.audit_log SET outcome = 'success' WHERE id = 2",
            "DELETE FROM auth.audit_log WHERE id = 3",
            "TRUNCATE auth.audit_log",
            "ALTER TABLE auth.audit_log OWNER TO tsmesh_auth",
            "SELECT setval(pg_get_serial_sequence('auth.audit_log', 'id'), 1)",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(statement)


async def test_deleting_the_newest_rows_after_a_checkpoint_is_detected(
    migrated: Any, pool: Any, keys: AuditKeys, tmp_path: Path
) -> None:
    audit = await _seeded(pool, keys, 5)
    checkpoints = await _checkpoint(audit, keys, tmp_path)
    owner = await _as_owner(migrated)
    try:
        await owner.execute("ALTER TABLE auth.audit_log DISABLE TRIGGER audit_log_append_only")
        await owner.execute("DELETE FROM auth.audit_log WHERE id >= 4")
        await owner.execute("ALTER TABLE auth.audit_log ENABLE TRIGGER audit_log_append_only")
    finally:
        await owner.close()
    result = await audit.verify(checkpoints)
    assert not result.ok and result.rows == 3
    assert any("row 5 named by checkpoint" in p and "rows were deleted" in p for p in result.problems)


@pytest.mark.parametrize("rewrite", ["from-row-3", "whole-log-unkeyed"])
async def test_editing_a_row_and_rechaining_is_detected(
    migrated: Any, pool: Any, keys: AuditKeys, tmp_path: Path, rewrite: str
) -> None:
    audit = await _seeded(pool, keys, 5)
    checkpoints = await _checkpoint(audit, keys, tmp_path)
    owner = await _as_owner(migrated)
    try:
        await owner.execute("ALTER TABLE auth.audit_log DISABLE TRIGGER audit_log_append_only")
        await owner.execute("UPDATE auth.audit_log SET outcome = 'success' WHERE id = 3")
        start = 3 if rewrite == "from-row-3" else 1
        if start == 1:
            await owner.execute("UPDATE auth.audit_log SET key_id = ''")
        rows = await owner.fetch("SELECT * FROM auth.audit_log ORDER BY id")
        prev = GENESIS if start == 1 else bytes(rows[start - 2]["hash"])
        for row in rows[start - 1 :]:  # re-chain as anyone without the KEK can: SHA-256 links
            link = legacy_hash(prev, row["at"], {name: row[name] for name in FIELDS})
            await owner.execute(
                "UPDATE auth.audit_log SET prev_hash = $1, hash = $2 WHERE id = $3", prev, link, row["id"]
            )
            prev = link
        await owner.execute("ALTER TABLE auth.audit_log ENABLE TRIGGER audit_log_append_only")
    finally:
        await owner.close()
    result = await audit.verify(checkpoints)
    assert not result.ok
    assert any("row 5 differs from checkpoint" in p for p in result.problems)
    if rewrite == "from-row-3":  # the keyed rows' MACs fail even without a checkpoint
        assert (await audit.verify()).first_bad_id == 3


async def test_disabling_or_dropping_the_trigger_is_detected(migrated: Any, pool: Any, keys: AuditKeys) -> None:
    audit = await _seeded(pool, keys, 2)
    owner = await _as_owner(migrated)
    try:
        await owner.execute("ALTER TABLE auth.audit_log DISABLE TRIGGER audit_log_append_only")
        assert "append-only trigger audit_log_append_only is disabled" in (await audit.verify()).problems[-1]
        await owner.execute("DROP TRIGGER audit_log_append_only ON auth.audit_log")
        assert "append-only trigger audit_log_append_only is missing" in (await audit.verify()).problems[-1]
    finally:
        await owner.close()


async def test_an_edit_behind_the_trigger_breaks_the_chain(migrated: Any, pool: Any, keys: AuditKeys) -> None:
    audit = await _seeded(pool, keys)
    admin = await asyncpg.connect(migrated.admin_dsn)
    try:  # a superuser bypassing the trigger: the row no longer matches its MAC
        await admin.execute("SET session_replication_role = replica")
        await admin.execute("UPDATE auth.audit_log SET outcome = 'success' WHERE id = 3")
        await admin.execute("DELETE FROM auth.audit_log WHERE id = 5")
    finally:
        await admin.close()
    result = await audit.verify()
    assert not result.ok and result.first_bad_id == 3 and result.rows == 4
    assert not (await AuditLog(pool, AuditKeys.from_kek(KeyEncryption(os.urandom(32)))).verify()).ok


async def test_a_checkpoint_forged_without_the_key_is_refused(pool: Any, keys: AuditKeys, tmp_path: Path) -> None:
    audit = await _seeded(pool, keys, 2)
    await _checkpoint(audit, keys, tmp_path)
    impostor = AuditKeys.from_kek(KeyEncryption(os.urandom(32)))
    forged = audit_checkpoints.sign(impostor, 1, b"\x01" * 32, datetime.now(UTC))
    forged["key"] = keys.key_id  # claims to be ours, signed with another key
    altered = orjson.loads((tmp_path / "audit-checkpoint-00000000000000000002.json").read_bytes())
    altered["hash"] = "00" * 32  # an honest checkpoint whose hash was edited
    (tmp_path / "audit-checkpoint-00000000000000000001.json").write_bytes(orjson.dumps(forged))
    (tmp_path / "audit-checkpoint-00000000000000000003.json").write_bytes(orjson.dumps({**altered, "id": 3}))
    checkpoints, refused = audit_checkpoints.load([tmp_path], keys)
    assert [c.row_id for c in checkpoints] == [2]
    assert len(refused) == 2 and all("signature does not verify" in r for r in refused)
    other = AuditKeys.from_kek(KeyEncryption(os.urandom(32)))
    _, refused_by_other = audit_checkpoints.load([tmp_path], other)
    assert all("another audit key" in r for r in refused_by_other)


async def test_checkpoints_are_read_back_from_the_json_log(pool: Any, keys: AuditKeys, tmp_path: Path) -> None:
    audit = await _seeded(pool, keys, 3)
    lines: list[str] = []
    formatter = JsonFormatter("auth")

    class _Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(formatter.format(record))

    handler = _Capture(level=logging.INFO)
    logger = logging.getLogger(audit_checkpoints.__name__)
    logger.addHandler(handler)
    previous = logger.level
    logger.setLevel(logging.INFO)
    try:
        checkpointer = Checkpointer(audit.head, CheckpointExporter(keys, None))
        assert await checkpointer.checkpoint()
        assert not await checkpointer.checkpoint()  # the head has not moved: nothing new to export
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
    log_file = tmp_path / "auth.log"
    log_file.write_text("not json\n" + "\n".join(lines) + "\n")
    checkpoints, refused = audit_checkpoints.load([log_file], keys)
    assert refused == [] and [c.row_id for c in checkpoints] == [3]
    assert (await audit.verify(checkpoints)).ok


async def test_concurrent_appends_keep_one_chain(pool: Any, keys: AuditKeys) -> None:
    audit = AuditLog(pool, keys)
    await asyncio.gather(*(audit.append(AuditEvent("token.create", "success", f"t{i}")) for i in range(40)))
    result = await audit.verify()
    assert result.ok and result.rows == 40


async def test_verify_audit_cli_checks_checkpoints_and_exits_1_on_truncation(
    migrated: Any, pool: Any, kek: bytes, keys: AuditKeys, tmp_path: Path
) -> None:
    await _seeded(pool, keys)
    env = {
        **os.environ,
        "TSMESH_DATABASE_URL": migrated.dsn("tsmesh_auth"),
        "TSMESH_AUTH_BCRYPT_COST": "4",
        "TSMESH_AUTH_KEK": base64.b64encode(kek).decode(),
        "TSMESH_AUTH_AUDIT_CHECKPOINT_DIR": str(tmp_path),
    }
    admin = [sys.executable, "-m", "tsmesh_auth", "admin"]

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [*admin, *args], env=env, capture_output=True, text=True, timeout=60
        )

    exported = await cli("audit-checkpoint")
    assert exported.returncode == 0, exported.stderr
    assert base64.b64encode(kek).decode() not in exported.stdout + exported.stderr
    ok = await cli("verify-audit")
    assert ok.returncode == 0 and "ok (5 rows, 1 checkpoints" in ok.stdout, ok.stderr
    owner = await _as_owner(migrated)
    try:
        await owner.execute("ALTER TABLE auth.audit_log DISABLE TRIGGER audit_log_append_only")
        await owner.execute("DELETE FROM auth.audit_log WHERE id = 5")
        await owner.execute("ALTER TABLE auth.audit_log ENABLE TRIGGER audit_log_append_only")
    finally:
        await owner.close()
    broken = await cli("verify-audit")
    assert broken.returncode == 1 and "row 5 named by checkpoint" in broken.stderr
    no_checkpoints = await cli("verify-audit", "--checkpoints", str(tmp_path / "empty"))
    assert no_checkpoints.returncode == 1 and "no such file or directory" in no_checkpoints.stderr


async def test_migrating_without_the_bootstrap_seal_says_what_to_apply(database: Any) -> None:
    admin = await asyncpg.connect(database.admin_dsn)
    try:
        await admin.execute("DROP FUNCTION tsmesh_audit.seal_audit_log()")
    finally:
        await admin.close()
    with pytest.raises(RuntimeError, match=r"apply deploy/postgres/bootstrap\.sql"):
        await upgrade_async(database.dsn("tsmesh_auth"))


@pytest.fixture
def auth_env(auth_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The auth server of this module checkpoints every second into ``tmp_path``."""
    return {**auth_env, "TSMESH_AUTH_AUDIT_CHECKPOINT_DIR": str(tmp_path), "TSMESH_AUTH_AUDIT_CHECKPOINT_SECONDS": "1"}


async def test_the_server_exports_signed_checkpoints_as_the_log_grows(
    auth_server: Any, auth_env: dict[str, str], tmp_path: Path
) -> None:
    name, _ = await auth_server.tenant()
    with pytest.raises(grpc.aio.AioRpcError):
        await auth_server.login(name, "nobody@example.com", "wrong-password")  # an audited failure
    await eventually(lambda: list(tmp_path.glob("audit-checkpoint-*.json")), timeout=30)
    keys = AuditKeys.from_kek(KeyEncryption(base64.b64decode(auth_env["TSMESH_AUTH_KEK"])))
    checkpoints, refused = audit_checkpoints.load([tmp_path], keys)
    assert refused == [] and checkpoints
    result = await auth_server.parts.audit.verify(checkpoints)
    assert result.ok and result.checkpoints == len(checkpoints) >= 1
