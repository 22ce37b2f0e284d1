"""The append-only, hash-chained audit log (``auth.audit_log``).

Each row stores ``hash = sha256(prev_hash || canonical(row))`` where ``canonical`` is the row's
fields as sorted-key JSON. Appends are serialized by a transaction-scoped advisory lock so the chain
never forks between replicas; ``verify`` walks the chain and names the first row that does not match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from tsmesh_auth.callers import reporter_var
from tsmesh_common.context import request_id_var

GENESIS = b"\x00" * 32
AUDIT_LOCK_KEY = 0x7453_6D65_7368_4155  # "tsmeshAU": the advisory lock serializing the chain
MAX_FIELD = 1024


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
    # the authenticated service that reported the event or vouched for its client address (ADR 0107);
    # None: the service of the current call
    reporter: str | None = None


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of walking the chain: ``ok`` and, when broken, the first row id that fails."""

    ok: bool
    rows: int
    first_bad_id: int | None = None


def canonical(at: datetime, fields: dict[str, str]) -> bytes:
    """The bytes a row's hash covers: its time (UTC, microseconds) and text fields, sorted keys."""
    body = {"at": at.astimezone(UTC).isoformat(timespec="microseconds"), **fields}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: bytes, at: datetime, fields: dict[str, str]) -> bytes:
    return hashlib.sha256(prev_hash + canonical(at, fields)).digest()


def _fields(event: AuditEvent) -> dict[str, str]:
    fields = {
        "action": event.action[:MAX_FIELD],
        "outcome": event.outcome[:MAX_FIELD],
        "tenant_id": event.tenant_id[:MAX_FIELD],
        "actor": event.actor[:MAX_FIELD],
        "client_address": event.client_address[:MAX_FIELD],
        "request_id": (event.request_id if event.request_id is not None else request_id_var.get() or "")[:MAX_FIELD],
        "detail": event.detail[:MAX_FIELD],
    }
    reporter = (event.reporter if event.reporter is not None else reporter_var.get())[:MAX_FIELD]
    if reporter:  # hashed only when set: rows written before the column existed verify unchanged
        fields["reporter"] = reporter
    return fields


class AuditLog:
    """Appends events to the chain and verifies it."""

    def __init__(self, pool: Any, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._clock = clock

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
                    (at, action, outcome, tenant_id, actor, client_address, request_id, detail, prev_hash, hash,
                     reporter)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                """,
                at,
                fields["action"],
                fields["outcome"],
                fields["tenant_id"],
                fields["actor"],
                fields["client_address"],
                fields["request_id"],
                fields["detail"],
                prev_hash,
                chain_hash(prev_hash, at, fields),
                fields.get("reporter", ""),
            )

    async def verify(self) -> VerifyResult:
        """Recompute every hash in id order; the first mismatch (edit, deletion, reorder) is reported."""
        rows = 0
        prev_hash = GENESIS
        async with self._pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            async for row in conn.cursor(
                "SELECT id, at, action, outcome, tenant_id, actor, client_address, request_id, detail, prev_hash, hash,"
                " reporter"
                " FROM auth.audit_log ORDER BY id",
                prefetch=1000,
            ):
                rows += 1
                fields = {k: row[k] for k in ("action", "outcome", "tenant_id", "actor", "client_address")}
                fields.update(request_id=row["request_id"], detail=row["detail"])
                if row["reporter"]:
                    fields["reporter"] = row["reporter"]
                expected = chain_hash(prev_hash, row["at"], fields)
                if bytes(row["prev_hash"]) != prev_hash or bytes(row["hash"]) != expected:
                    return VerifyResult(ok=False, rows=rows, first_bad_id=int(row["id"]))
                prev_hash = expected
        return VerifyResult(ok=True, rows=rows)
