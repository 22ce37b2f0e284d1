"""API tokens for machines: ``tsm_<public id>_<secret>``, stored only as SHA-256, cached for Introspect.

The public id (16 hex digits) names the token in lists, audits and revocation events; the secret is
256 random bits shown once. Lookups compare digests in constant time. Answers are cached in process
by token digest and evicted on revoke and rotate (here, and on every replica through the revocation
feed). ``last_used_at`` is written at most once a minute per token, off the request path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tsmesh_auth.audit import AuditEvent, AuditLog
from tsmesh_auth.revocations import RevocationPublisher
from tsmesh_common.authn import API_TOKEN_PREFIX, SCOPES
from tsmesh_common.errors import InvalidArgument, PermissionDenied

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"^tsm_([0-9a-f]{16})_([A-Za-z0-9_\-]{43})$")
LAST_USED_INTERVAL = 60.0
MAX_TTL_SECONDS = 10 * 365 * 86_400
REVOKED_ANNOUNCE_SECONDS = 86_400.0


@dataclass(frozen=True, slots=True)
class CachedToken:
    """What Introspect answers for one secret, and until when that answer may be reused.

    ``view`` is the answer pre-rendered once by the transport (the Introspect response message).
    """

    token_id: str
    tenant_id: str
    subject: str
    scopes: tuple[str, ...]
    expires_at: float | None
    valid_until: float | None
    cached_until: float
    view: Any = None


@dataclass(frozen=True)
class ApiTokenRecord:
    """A token as listed to its tenant's admins (never the secret)."""

    id: str
    tenant_id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked: bool


@dataclass(frozen=True)
class Actor:
    """Who performs an administrative action and from where (for the audit log)."""

    subject: str
    client_address: str = ""
    token_id: str = ""  # the credential the action was made with (API tokens record their creator)


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_token(token: str) -> str | None:
    """The public id of a well-formed API token, else None."""
    match = _TOKEN.match(token)
    return match.group(1) if match else None


def validate_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(sorted({s.strip().lower() for s in scopes if s.strip()}))
    if not cleaned:
        raise InvalidArgument("scopes", "at least one of read, write, admin is required")
    unknown = [s for s in cleaned if s not in SCOPES]
    if unknown:
        raise InvalidArgument("scopes", f"unknown scope {unknown[0][:32]!r} (allowed: read, write, admin)")
    return cleaned


def _new_secret(token_id: str) -> str:
    return f"{API_TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


def _record(row: Any) -> ApiTokenRecord:
    return ApiTokenRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        last_used_at=row["last_used_at"],
        revoked=row["revoked_at"] is not None,
    )


class ApiTokenStore:
    """Create, list, rotate, revoke and look up API tokens of a tenant."""

    def __init__(
        self,
        pool: Any,
        audit: AuditLog,
        publisher: RevocationPublisher,
        *,
        cache_seconds: float = 10.0,
        default_grace_seconds: int = 3600,
        cache_size: int = 100_000,
        clock: Callable[[], float] = time.time,
        render: Callable[[CachedToken], Any] | None = None,
    ) -> None:
        self._pool = pool
        self._audit = audit
        self._publisher = publisher
        self._cache_seconds = cache_seconds
        self._default_grace = default_grace_seconds
        self._cache_size = cache_size
        self._clock = clock
        self._render = render
        self._cache: dict[bytes, CachedToken] = {}
        self._by_id: dict[str, set[bytes]] = {}
        self._last_used: dict[str, float] = {}
        self._touches: set[asyncio.Task[None]] = set()

    async def create(
        self, tenant_id: str, name: str, scopes: Sequence[str], ttl_seconds: int, actor: Actor
    ) -> tuple[ApiTokenRecord, str]:
        """A new token and its secret (shown once)."""
        name = name.strip()
        if not name or len(name) > 100:
            raise InvalidArgument("name", "must be 1 to 100 characters")
        clean_scopes = validate_scopes(scopes)
        if ttl_seconds < 0 or ttl_seconds > MAX_TTL_SECONDS:
            raise InvalidArgument("ttl_seconds", f"must be between 0 (no expiry) and {MAX_TTL_SECONDS}")
        token_id = secrets.token_hex(8)
        secret = _new_secret(token_id)
        expires_at = datetime.now(UTC) + timedelta(seconds=ttl_seconds) if ttl_seconds else None
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "INSERT INTO auth.api_tokens"
                " (id, tenant_id, name, scopes, secret_hash, created_by, expires_at, created_by_token)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING "
                "id, tenant_id, name, scopes, created_at, expires_at, last_used_at, revoked_at",
                token_id,
                tenant_id,
                name,
                list(clean_scopes),
                digest(secret),
                actor.subject,
                expires_at,
                actor.token_id or None,
            )
        await self._audit_action("api_token.create", tenant_id, actor, token_id)
        return _record(row), secret

    async def list(self, tenant_id: str) -> list[ApiTokenRecord]:
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, tenant_id, name, scopes, created_at, expires_at, last_used_at, revoked_at"
                " FROM auth.api_tokens WHERE tenant_id = $1 ORDER BY created_at, id",
                tenant_id,
            )
        return [_record(r) for r in rows]

    async def rotate(
        self, tenant_id: str, token_id: str, grace_seconds: int, actor: Actor
    ) -> tuple[ApiTokenRecord, str]:
        """A new secret for the token; the old one keeps working for the grace period."""
        if grace_seconds < 0 or grace_seconds > 30 * 86_400:
            raise InvalidArgument("grace_seconds", "must be between 0 (server default) and 2592000")
        grace = timedelta(seconds=grace_seconds or self._default_grace)
        secret = _new_secret(token_id)
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "UPDATE auth.api_tokens SET prev_secret_hash = secret_hash, prev_valid_until = now() + $3,"
                " secret_hash = $4 WHERE id = $1 AND tenant_id = $2 AND revoked_at IS NULL RETURNING "
                "id, tenant_id, name, scopes, created_at, expires_at, last_used_at, revoked_at",
                token_id,
                tenant_id,
                grace,
                digest(secret),
            )
        if row is None:
            raise PermissionDenied("no such active token in your tenant")
        self.evict(token_id)
        await self._audit_action("api_token.rotate", tenant_id, actor, token_id)
        return _record(row), secret

    async def revoke(self, tenant_id: str, token_id: str, actor: Actor) -> ApiTokenRecord:
        """Revoke at once: evict here, announce on the revocation feed, audit. Idempotent."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "UPDATE auth.api_tokens SET revoked_at = coalesce(revoked_at, now())"
                " WHERE id = $1 AND tenant_id = $2 RETURNING "
                "id, tenant_id, name, scopes, created_at, expires_at, last_used_at, revoked_at",
                token_id,
                tenant_id,
            )
        if row is None:
            raise PermissionDenied("no such token in your tenant")
        await self._announce(token_id, _ts(row["expires_at"]))
        await self._audit_action("api_token.revoke", tenant_id, actor, token_id)
        await self.revoke_created_by(tenant_id, [token_id], actor)
        return _record(row)

    async def revoke_created_by(self, tenant_id: str, parents: Sequence[str], actor: Actor) -> tuple[str, ...]:
        """Revoke every token created with one of ``parents`` (credential ids), and what those
        created in turn: a credential revoked for cause takes what it made with it (ADR 0106)."""
        if not parents:
            return ()
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                """
                WITH RECURSIVE made AS (
                    SELECT id FROM auth.api_tokens WHERE tenant_id = $1 AND created_by_token = ANY($2::text[])
                    UNION
                    SELECT t.id FROM auth.api_tokens t JOIN made ON t.created_by_token = made.id
                    WHERE t.tenant_id = $1
                )
                UPDATE auth.api_tokens SET revoked_at = now()
                WHERE id IN (SELECT id FROM made) AND revoked_at IS NULL
                RETURNING id, expires_at
                """,
                tenant_id,
                list(parents),
            )
        for row in rows:
            await self._announce(row["id"], _ts(row["expires_at"]))
            await self._audit.append(
                AuditEvent(
                    action="api_token.revoke",
                    outcome="cascaded",
                    tenant_id=tenant_id,
                    actor=actor.subject,
                    client_address=actor.client_address,
                    detail=f"token_id={row['id']} created_by_revoked={','.join(parents)[:200]}",
                )
            )
        return tuple(row["id"] for row in rows)

    async def _announce(self, token_id: str, expires: float | None) -> None:
        self.evict(token_id)
        horizon = self._clock() + REVOKED_ANNOUNCE_SECONDS
        await self._publisher.publish(token_id, min(expires, horizon) if expires else horizon)

    async def lookup(self, token: str) -> CachedToken | None:
        """The active token behind ``token`` (cached), or None. Never raises for bad input."""
        key = digest(token)
        now = self._clock()
        entry = self._cache.get(key)
        if entry is None or entry.cached_until <= now:
            entry = await self._load(token, key, now)
            if entry is None:
                return None
        if entry.valid_until is not None and entry.valid_until <= now:
            self._drop(key, entry.token_id)
            return None
        self._maybe_touch(entry.token_id)
        return entry

    async def _load(self, token: str, key: bytes, now: float) -> CachedToken | None:
        token_id = parse_token(token)
        if token_id is None:
            return None
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT id, tenant_id, scopes, secret_hash, prev_secret_hash, prev_valid_until, expires_at, revoked_at"
                " FROM auth.api_tokens WHERE id = $1",
                token_id,
            )
        if row is None or row["revoked_at"] is not None:
            return None
        expires_at = _ts(row["expires_at"])
        valid_until = expires_at
        if not hmac.compare_digest(bytes(row["secret_hash"]), key):
            prev, prev_until = row["prev_secret_hash"], _ts(row["prev_valid_until"])
            if prev is None or prev_until is None or not hmac.compare_digest(bytes(prev), key):
                return None
            valid_until = prev_until if valid_until is None else min(valid_until, prev_until)
        if valid_until is not None and valid_until <= now:
            return None
        entry = CachedToken(
            token_id=token_id,
            tenant_id=row["tenant_id"],
            subject=f"api-token:{token_id}",
            scopes=tuple(row["scopes"]),
            expires_at=expires_at,
            valid_until=valid_until,
            cached_until=now + self._cache_seconds,
        )
        if self._render is not None:
            entry = dataclasses.replace(entry, view=self._render(entry))
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
            self._by_id.clear()
        self._cache[key] = entry
        self._by_id.setdefault(token_id, set()).add(key)
        return entry

    def set_publisher(self, publisher: RevocationPublisher) -> None:
        """Replace how revocations are announced (the composition root adds the local authenticator)."""
        self._publisher = publisher

    def evict(self, token_id: str) -> None:
        """Forget every cached answer for ``token_id`` (revoke, rotate, a revocation event)."""
        for key in self._by_id.pop(token_id, ()):
            self._cache.pop(key, None)

    def _drop(self, key: bytes, token_id: str) -> None:
        self._cache.pop(key, None)
        keys = self._by_id.get(token_id)
        if keys is not None:
            keys.discard(key)

    def _maybe_touch(self, token_id: str) -> None:
        now = time.monotonic()
        if now - self._last_used.get(token_id, float("-inf")) < LAST_USED_INTERVAL or len(self._touches) > 100:
            return
        self._last_used[token_id] = now
        task = asyncio.get_running_loop().create_task(self._touch(token_id))
        self._touches.add(task)
        task.add_done_callback(self._touches.discard)

    async def _touch(self, token_id: str) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.execute("UPDATE auth.api_tokens SET last_used_at = now() WHERE id = $1", token_id)
        except Exception as exc:  # noqa: BLE001 - last-used is advisory
            log.warning("last-used update failed", extra={"error": type(exc).__name__})

    async def drain(self) -> None:
        """Wait for pending last-used writes (shutdown, tests)."""
        if self._touches:
            await asyncio.gather(*self._touches, return_exceptions=True)

    async def _audit_action(self, action: str, tenant_id: str, actor: Actor, token_id: str) -> None:
        await self._audit.append(
            AuditEvent(
                action=action,
                outcome="success",
                tenant_id=tenant_id,
                actor=actor.subject,
                client_address=actor.client_address,
                detail=f"token_id={token_id}",
            )
        )
