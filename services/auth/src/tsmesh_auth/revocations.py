"""Revoked access tokens: durable in ``auth.revocations``, announced on Redis (ADR 0106).

A revocation is first committed to the table (with the token's expiry, after which the row is
pruned), then refused in this process and published on the namespace's revocation channel so every
authenticator evicts the token at once. A publish that fails leaves the row unpublished and
:meth:`RevocationList.maintain_forever` publishes it again once Redis answers; authenticators
also reload the whole list (``ListRevocations``) at start and whenever their feed resubscribes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from prometheus_client import Counter

log = logging.getLogger(__name__)

PUBLISH_FAILURES = Counter("tsmesh_auth_revocation_publish_failures_total", "Revocation events not published")
REPUBLISHED = Counter("tsmesh_auth_revocations_republished_total", "Revocation events published on a retry")

Entry = tuple[str, float]  # (token id, unix seconds after which the token is expired anyway)


class RevocationPublisher(Protocol):
    """Announces that ``token_id`` must be refused until ``until`` (unix seconds); True when delivered."""

    async def publish(self, token_id: str, until: float) -> bool: ...


class RedisRevocationPublisher:
    """PUBLISH ``"<token_id> <until>"`` on the namespace's revocation channel (the contract)."""

    def __init__(self, redis: Any, channel: str) -> None:
        self._redis = redis
        self._channel = channel

    async def publish(self, token_id: str, until: float) -> bool:
        try:
            await self._redis.publish(self._channel, f"{token_id} {int(until)}")
        except Exception as exc:  # noqa: BLE001 - the caller keeps what was not delivered and retries
            PUBLISH_FAILURES.inc()
            log.warning("revocation not published", extra={"token_id": token_id, "error": type(exc).__name__})
            return False
        return True


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class RevocationList:
    """``auth.revocations``: record in the caller's transaction, then announce; list, retry, prune."""

    def __init__(
        self,
        pool: Any,
        remote: RevocationPublisher,
        local: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._pool = pool
        self._remote = remote
        self._local = local
        self._clock = clock

    def set_local(self, local: Callable[[str, float], None]) -> None:
        """Refuse each revoked token in this process too (auth's own authenticator)."""
        self._local = local

    async def record(self, conn: Any, entries: Sequence[Entry]) -> None:
        """Store revocations on ``conn`` (commit them with the change that caused them)."""
        if entries:
            await conn.executemany(
                "INSERT INTO auth.revocations (token_id, expires_at) VALUES ($1, $2)"
                " ON CONFLICT (token_id) DO UPDATE SET expires_at = greatest(auth.revocations.expires_at,"
                " excluded.expires_at), published_at = NULL",
                [(token_id, _at(until)) for token_id, until in entries],
            )

    async def announce(self, entries: Sequence[Entry]) -> None:
        """Refuse here, publish to the mesh, and mark what was delivered (the rest is retried)."""
        delivered: list[str] = []
        for token_id, until in entries:
            if self._local is not None:
                self._local(token_id, until)
            if await self._remote.publish(token_id, until):
                delivered.append(token_id)
        if delivered:
            await self._mark_published(delivered)

    async def publish(self, token_id: str, until: float) -> bool:
        """:class:`RevocationPublisher` for callers without a transaction: record, then announce."""
        async with self._pool.acquire() as conn:
            await self.record(conn, [(token_id, until)])
        await self.announce([(token_id, until)])
        return True

    async def _mark_published(self, token_ids: Sequence[str]) -> None:
        async with self._pool.acquire() as conn:
            await conn.execute(
                "UPDATE auth.revocations SET published_at = now() WHERE token_id = ANY($1::text[])", list(token_ids)
            )

    async def unexpired(self, after: str = "", limit: int = 10_000) -> list[Entry]:
        """Revocations of tokens not yet expired, ordered by token id, starting after ``after``."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT token_id, extract(epoch FROM expires_at)::float8 AS until FROM auth.revocations"
                " WHERE expires_at > now() AND token_id > $1 ORDER BY token_id LIMIT $2",
                after,
                limit,
            )
        return [(row["token_id"], float(row["until"])) for row in rows]

    async def republish_pending(self, limit: int = 1000) -> int:
        """Publish revocations whose announcement failed; the number delivered now."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT token_id, extract(epoch FROM expires_at)::float8 AS until FROM auth.revocations"
                " WHERE published_at IS NULL AND expires_at > now() LIMIT $1",
                limit,
            )
        delivered: list[str] = []
        for row in rows:
            if not await self._remote.publish(row["token_id"], float(row["until"])):
                break  # Redis still away: the rest waits for the next round
            delivered.append(row["token_id"])
        if delivered:
            await self._mark_published(delivered)
            REPUBLISHED.inc(len(delivered))
        return len(delivered)

    async def prune(self) -> int:
        """Forget revocations of tokens that have expired anyway."""
        async with self._pool.acquire() as conn:
            status = await conn.execute("DELETE FROM auth.revocations WHERE expires_at <= now()")
        return int(status.split()[-1])

    async def maintain_forever(self, interval: float) -> None:
        """Every ``interval`` seconds: republish what is owed, prune what expired (until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.republish_pending()
                await self.prune()
            except Exception as exc:  # noqa: BLE001 - housekeeping retries next period
                log.warning("revocation maintenance failed", extra={"error": type(exc).__name__})
