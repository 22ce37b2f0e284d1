"""Login, Refresh and Logout: access JWTs plus rotating opaque refresh tokens grouped in families.

Refresh marks the presented token used with a conditional ``UPDATE ... WHERE used_at IS NULL``, so of
two concurrent refreshes exactly one wins. A token presented again after it was used is reuse: the
whole family is revoked (and its live access tokens announced as revoked) and audited. A loser of a
genuine race (reuse within ``reuse_grace_seconds`` of the win) is refused without revoking the family.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from prometheus_client import Counter

from tsmesh_auth.api_tokens import Actor, ApiTokenStore
from tsmesh_auth.audit import AuditEvent, AuditLog
from tsmesh_auth.directory import Directory
from tsmesh_auth.passwords import PasswordHasher, normalize_email
from tsmesh_auth.revocations import RevocationList
from tsmesh_auth.throttle import LoginThrottle
from tsmesh_auth.tokens import AccessTokenIssuer, IssuedToken
from tsmesh_common.errors import InvalidArgument, Unauthenticated
from tsmesh_common.identity import login_identity

log = logging.getLogger(__name__)

LOGINS = Counter("tsmesh_auth_logins_total", "Login attempts", ["outcome"])
REFRESHES = Counter("tsmesh_auth_refreshes_total", "Refresh attempts", ["outcome"])
REFRESH_PREFIX = "rt_"
MAX_REFRESH_TOKEN_CHARS = 128


@dataclass(frozen=True)
class Tokens:
    access: IssuedToken
    refresh_token: str
    expires_in: int


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Sessions:
    """The interactive side of auth: passwords in, token pairs out."""

    def __init__(
        self,
        pool: Any,
        directory: Directory,
        hasher: PasswordHasher,
        throttle: LoginThrottle,
        issuer: AccessTokenIssuer,
        audit: AuditLog,
        revocations: RevocationList,
        *,
        refresh_ttl_seconds: int,
        reuse_grace_seconds: float,
        tokens: ApiTokenStore | None = None,
    ) -> None:
        self._pool = pool
        self._directory = directory
        self._hasher = hasher
        self._throttle = throttle
        self._issuer = issuer
        self._audit = audit
        self._revocations = revocations
        self._refresh_ttl = timedelta(seconds=refresh_ttl_seconds)
        self._reuse_grace = reuse_grace_seconds
        self._tokens = tokens

    async def login(self, tenant: str, email: str, password: str, client_address: str) -> Tokens:
        """A token pair for valid credentials; one bland refusal for every kind of failure."""
        if not tenant or len(tenant) > 128:
            raise InvalidArgument("tenant", "is required (at most 128 characters)")
        if not password or len(password) > 1024:
            raise InvalidArgument("password", "is required (at most 1024 characters)")
        email = normalize_email(email)
        attempt = self._throttle.attempt(login_identity(tenant, email), client_address)
        await self._throttle.reserve(attempt)
        user = await self._directory.login_user(tenant, email)
        usable = user is not None and not user.disabled
        ok = await self._hasher.verify(password, user.password_hash if user is not None and usable else None)
        if not ok or user is None:
            LOGINS.labels("failure").inc()
            tenant_id = user.tenant_id if user is not None else ""
            await self._audit.append(AuditEvent("login", "failure", tenant_id, email, client_address))
            raise Unauthenticated("invalid credentials")
        await self._throttle.succeeded(attempt)
        async with self._pool.acquire() as conn:
            tokens = await self._issue(conn, user.tenant_id, uuid.UUID(user.id), user.scopes, uuid.uuid4())
        LOGINS.labels("success").inc()
        await self._audit.append(AuditEvent("login", "success", user.tenant_id, user.id, client_address))
        return tokens

    async def _issue(
        self, conn: Any, tenant_id: str, user_id: uuid.UUID, scopes: tuple[str, ...], family: uuid.UUID
    ) -> Tokens:
        access = self._issuer.issue(tenant_id, str(user_id), scopes)
        refresh = REFRESH_PREFIX + secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO auth.refresh_tokens (token_hash, family_id, user_id, tenant_id, expires_at, access_jti)"
            " VALUES ($1, $2, $3, $4, now() + $5, $6)",
            _hash(refresh),
            family,
            user_id,
            tenant_id,
            self._refresh_ttl,
            access.jti,
        )
        return Tokens(access=access, refresh_token=refresh, expires_in=self._issuer.ttl_seconds)

    async def refresh(self, refresh_token: str, client_address: str) -> Tokens:
        """Rotate: the presented token is spent, a new one of the same family is returned."""
        if not refresh_token or len(refresh_token) > MAX_REFRESH_TOKEN_CHARS or not refresh_token.isascii():
            raise Unauthenticated("invalid refresh token")
        token_hash = _hash(refresh_token)
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                won = await conn.fetchrow(
                    "UPDATE auth.refresh_tokens SET used_at = clock_timestamp()"
                    " WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()"
                    " RETURNING family_id, user_id, tenant_id",
                    token_hash,
                )
                if won is not None:
                    scopes = await self._directory.user_scopes(conn, won["user_id"])
                    if scopes is not None:
                        tokens = await self._issue(conn, won["tenant_id"], won["user_id"], scopes, won["family_id"])
                        REFRESHES.labels("success").inc()
                        return tokens
            if won is not None:
                await self._revoke_family(conn, won["family_id"])
                REFRESHES.labels("user_disabled").inc()
                raise Unauthenticated("invalid refresh token")
            await self._refused(conn, token_hash, client_address)
        raise Unauthenticated("invalid refresh token")

    async def _refused(self, conn: Any, token_hash: bytes, client_address: str) -> None:
        row = await conn.fetchrow(
            "SELECT family_id, user_id, tenant_id, revoked_at, extract(epoch FROM clock_timestamp() - used_at) AS age"
            " FROM auth.refresh_tokens WHERE token_hash = $1",
            token_hash,
        )
        if row is None or row["revoked_at"] is not None or row["age"] is None:
            REFRESHES.labels("invalid").inc()
            return
        subject, tenant_id = str(row["user_id"]), row["tenant_id"]
        if float(row["age"]) <= self._reuse_grace:
            REFRESHES.labels("race_lost").inc()
            await self._audit.append(
                AuditEvent("refresh_token.race", "refused", tenant_id, subject, client_address, "concurrent refresh")
            )
            return
        await self._revoke_family(conn, row["family_id"])
        REFRESHES.labels("reuse").inc()
        await self._audit.append(
            AuditEvent(
                "refresh_token.reuse",
                "family_revoked",
                tenant_id,
                subject,
                client_address,
                f"family={row['family_id']}",
            )
        )
        if self._tokens is not None:
            # the session was stolen: what any of its access tokens created is suspect too (ADR 0106)
            jtis = await conn.fetch(
                "SELECT access_jti FROM auth.refresh_tokens WHERE family_id = $1 AND access_jti IS NOT NULL",
                row["family_id"],
            )
            await self._tokens.revoke_created_by(
                tenant_id, [r["access_jti"] for r in jtis], Actor(subject, client_address)
            )

    async def _revoke_family(self, conn: Any, family_id: uuid.UUID) -> None:
        """Revoke every token of a family; its access tokens that may still be live are recorded as
        revoked in the same transaction, then announced."""
        now = time.time()
        async with conn.transaction():
            rows = await conn.fetch(
                "UPDATE auth.refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL"
                " RETURNING access_jti, extract(epoch FROM issued_at) AS issued",
                family_id,
            )
            entries = [
                (row["access_jti"], until)
                for row in rows
                if row["access_jti"] and (until := float(row["issued"]) + self._issuer.ttl_seconds + 60) > now
            ]
            await self._revocations.record(conn, entries)
        await self._revocations.announce(entries)

    async def purge_expired(self) -> int:
        """Delete refresh tokens expired for more than a day (their families can no longer be used)."""
        async with self._pool.acquire() as conn:
            status = await conn.execute("DELETE FROM auth.refresh_tokens WHERE expires_at < now() - interval '1 day'")
        return int(status.split()[-1])

    async def purge_forever(self, interval: float) -> None:
        """Run :meth:`purge_expired` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.purge_expired()
            except Exception as exc:  # noqa: BLE001 - housekeeping retries next period
                log.warning("refresh token purge failed", extra={"error": type(exc).__name__})

    async def logout(self, refresh_token: str, client_address: str) -> None:
        """End the session of this refresh token (its family); unknown tokens are accepted silently."""
        if not refresh_token or len(refresh_token) > MAX_REFRESH_TOKEN_CHARS or not refresh_token.isascii():
            return
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT family_id, user_id, tenant_id FROM auth.refresh_tokens WHERE token_hash = $1",
                _hash(refresh_token),
            )
            if row is None:
                return
            await self._revoke_family(conn, row["family_id"])
        await self._audit.append(AuditEvent("logout", "success", row["tenant_id"], str(row["user_id"]), client_address))
