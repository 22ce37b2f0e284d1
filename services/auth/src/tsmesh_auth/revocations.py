"""Publishing revocations on Redis so every authenticator of the mesh evicts the token at once."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from prometheus_client import Counter

log = logging.getLogger(__name__)

PUBLISH_FAILURES = Counter("tsmesh_auth_revocation_publish_failures_total", "Revocation events not published")


class RevocationPublisher(Protocol):
    """Announces that ``token_id`` must be refused until ``until`` (unix seconds)."""

    async def publish(self, token_id: str, until: float) -> None: ...


class RedisRevocationPublisher:
    """PUBLISH ``"<token_id> <until>"`` on the namespace's revocation channel (the contract)."""

    def __init__(self, redis: Any, channel: str) -> None:
        self._redis = redis
        self._channel = channel

    async def publish(self, token_id: str, until: float) -> None:
        try:
            await self._redis.publish(self._channel, f"{token_id} {int(until)}")
        except Exception as exc:  # noqa: BLE001 - the revocation is committed; caches expire on their own
            PUBLISH_FAILURES.inc()
            log.warning("revocation not published", extra={"token_id": token_id, "error": type(exc).__name__})
