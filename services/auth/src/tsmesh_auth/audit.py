"""The append-only, MAC-chained audit log (``auth.audit_log``), tamper-evident against its own role.

Each row stores ``hash = HMAC-SHA256(chain key, prev_hash || canonical(row))`` where ``canonical`` is the
row's fields as sorted-key JSON and the chain key is derived from the KEK (never in PostgreSQL), and
``key_id`` names that key. Rows written before ADR 0107 (``key_id`` empty) keep their plain SHA-256 link
and may only precede keyed rows. Appends are serialized by a transaction-scoped advisory lock so the chain
never forks between replicas. ``verify`` walks the chain, compares it with the signed checkpoints exported
outside the database, and checks the table is still sealed (owned by another role, trigger enabled).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tsmesh_auth.audit_checkpoints import Checkpoint
from tsmesh_auth.audit_keys import AuditKeys
from tsmesh_common.context import request_id_var

GENESIS = b"\x00" * 32
AUDIT_LOCK_KEY = 0x7453_6D65_7368_4155  # "tsmeshAU": the advisory lock serializing the chain
MAX_FIELD = 1024
MAX_REPORTED_ROWS = 10
Link = Callable[[bytes, datetime, dict[str, str]], bytes]
_FIELDS = ("action", "outcome", "tenant_id", "actor", "client_address", "request_id", "detail")
_SEAL = """
SELECT c.relowner = r.oid AS owned_by_me,
       NOT r.rolsuper AND (has_table_privilege(c.oid, 'UPDATE') OR has_table_privilege(c.oid, 'DELETE')
                           OR has_table_privilege(c.oid, 'TRUNCATE')) AS rewritable,
       (SELECT t.tgenabled FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = 'audit_log_append_only')
           AS trigger
FROM pg_class c, pg_roles r
WHERE c.oid = to_regclass('auth.audit_log') AND r.rolname = current_user
"""


@dataclass(frozen=True)
class AuditEvent:
    """One security-relevant event: what happened, to whom, from where."""

    action: str
    outcome: str
    tenant_id: str = ""
    actor: str = ""
    client_address: str = ""
    detail: str = ""
    request_id: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a verification: ``ok``, the rows walked, the first row that fails and every problem found."""

    ok: bool
    rows: int
    first_bad_id: int | None = None
    problems: tuple[str, ...] = ()
    checkpoints: int = 0


def canonical(at: datetime, fields: dict[str, str]) -> bytes:
    """The bytes a row's hash covers: its time (UTC, microseconds) and text fields, sorted keys."""
    body = {"at": at.astimezone(UTC).isoformat(timespec="microseconds"), **fields}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def legacy_hash(prev_hash: bytes, at: datetime, fields: dict[str, str]) -> bytes:
    """The unkeyed link of rows written before ADR 0107: anyone can recompute it."""
    return hashlib.sha256(prev_hash + canonical(at, fields)).digest()


def _fields(event: AuditEvent) -> dict[str, str]:
    return {
        "action": event.action[:MAX_FIELD],
        "outcome": event.outcome[:MAX_FIELD],
        "tenant_id": event.tenant_id[:MAX_FIELD],
        "actor": event.actor[:MAX_FIELD],
        "client_address": event.client_address[:MAX_FIELD],
        "request_id": (event.request_id if event.request_id is not None else request_id_var.get() or "")[:MAX_FIELD],
        "detail": event.detail[:MAX_FIELD],
    }


class AuditLog:
    """Appends events to the chain, reports its head for checkpoints, and verifies it."""

    def __init__(self, pool: Any, keys: AuditKeys, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._keys = keys
        self._clock = clock

    def link(self, prev_hash: bytes, at: datetime, fields: dict[str, str]) -> bytes:
        """The MAC of a row: only a holder of the KEK can compute it."""
        return self._keys.mac(prev_hash + canonical(at, fields))

    async def append(self, event: AuditEvent) -> None:
        """Add one row at the end of the chain (one short transaction under the advisory lock)."""
        fields = _fields(event)
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", AUDIT_LOCK_KEY)
            prev = await conn.fetchval("SELECT hash FROM auth.audit_log ORDER BY id DESC LIMIT 1")
            prev_hash = bytes(prev) if prev is not None else GENESIS
            at = self._clock()
            await conn.execute(
                """
                INSERT INTO auth.audit_log
                    (at, action, outcome, tenant_id, actor, client_address, request_id, detail, prev_hash, hash, key_id)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                """,
                at,
                *(fields[name] for name in _FIELDS),
                prev_hash,
                self.link(prev_hash, at, fields),
                self._keys.key_id,
            )

    async def head(self) -> tuple[int, bytes] | None:
        """The newest row's id and MAC (what a checkpoint records), or None while the log is empty."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow("SELECT id, hash FROM auth.audit_log ORDER BY id DESC LIMIT 1")
        return None if row is None else (int(row["id"]), bytes(row["hash"]))

    async def verify(self, checkpoints: Sequence[Checkpoint] = ()) -> VerifyResult:
        """Check the seal, recompute every MAC in id order and compare the rows checkpoints name.

        A row fails when its MAC or its link to the previous row does not match (an edit, a deleted,
        inserted or reordered row); the walk goes on from the stored hash so every such row is counted.
        """
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            seal = await conn.fetchrow(_SEAL)
            if seal is None:
                return VerifyResult(ok=False, rows=0, problems=("table auth.audit_log is missing",))
            walk = _Walk(self.link, self._keys.key_id, checkpoints)
            async for row in conn.cursor(
                "SELECT id, at, action, outcome, tenant_id, actor, client_address, request_id, detail, prev_hash, hash,"
                " key_id FROM auth.audit_log ORDER BY id",
                prefetch=1000,
            ):
                walk.row(row)
        problems = [*_seal_problems(seal), *walk.problems()]
        return VerifyResult(
            ok=not problems,
            rows=walk.rows,
            first_bad_id=walk.bad[0] if walk.bad else None,
            problems=tuple(problems),
            checkpoints=len(checkpoints),
        )


def _seal_problems(seal: Any) -> list[str]:
    problems = []
    if seal["owned_by_me"]:
        problems.append("auth.audit_log is owned by the role verifying it (the service role): it is not sealed")
    if seal["rewritable"]:
        problems.append("the service role may UPDATE, DELETE or TRUNCATE auth.audit_log")
    if seal["trigger"] is None:
        problems.append("the append-only trigger audit_log_append_only is missing")
    elif seal["trigger"] not in (b"O", b"A", "O", "A"):
        problems.append("the append-only trigger audit_log_append_only is disabled")
    return problems


class _Walk:
    """The state of one verification walk over the rows in id order."""

    def __init__(self, link: Link, key_id: str, checkpoints: Sequence[Checkpoint]) -> None:
        self._link = link
        self._key_id = key_id
        self._pending: dict[int, list[Checkpoint]] = {}
        for checkpoint in checkpoints:
            self._pending.setdefault(checkpoint.row_id, []).append(checkpoint)
        self._prev = GENESIS
        self._keyed = False
        self._other_keys: set[str] = set()
        self._checkpoint_problems: list[str] = []
        self.rows = 0
        self.last_id = 0
        self.bad: list[int] = []

    def row(self, row: Any) -> None:
        self.rows += 1
        row_id, stored, key_id = int(row["id"]), bytes(row["hash"]), row["key_id"]
        fields = {name: row[name] for name in _FIELDS}
        if key_id == "" and not self._keyed:
            expected = legacy_hash(self._prev, row["at"], fields)
        elif key_id == self._key_id:
            self._keyed = True
            expected = self._link(self._prev, row["at"], fields)
        else:  # an unkeyed row after keyed ones, or a row keyed under another KEK
            self._other_keys.add(key_id)
            expected = b""
        if bytes(row["prev_hash"]) != self._prev or not hmac.compare_digest(stored, expected):
            self.bad.append(row_id)
        for checkpoint in self._pending.pop(row_id, ()):
            if not hmac.compare_digest(stored, checkpoint.mac):
                self._checkpoint_problems.append(
                    f"row {row_id} differs from checkpoint {checkpoint.source} (rewritten since {checkpoint.at})"
                )
        self._prev = stored
        self.last_id = row_id

    def problems(self) -> list[str]:
        problems = []
        if self.bad:
            shown = ", ".join(str(i) for i in self.bad[:MAX_REPORTED_ROWS])
            more = f" and {len(self.bad) - MAX_REPORTED_ROWS} more" if len(self.bad) > MAX_REPORTED_ROWS else ""
            problems.append(f"{len(self.bad)} row(s) do not verify: id {shown}{more}")
        if self._other_keys:
            names = ", ".join(sorted(repr(k) for k in self._other_keys))
            problems.append(f"rows keyed under another key or unkeyed after keyed rows (key id {names})")
        problems.extend(self._checkpoint_problems)
        for row_id, checkpoints in sorted(self._pending.items()):
            where = "after the last row" if row_id > self.last_id else "inside the log"
            problems.append(
                f"row {row_id} named by checkpoint {checkpoints[0].source} ({checkpoints[0].at}) is missing"
                f" ({where}, id {self.last_id}): rows were deleted"
            )
        return problems
