"""Signing keys: Ed25519 (JWS alg EdDSA), each with a ``kid``, shared by every replica via the database.

Lifecycle of a key row: created with ``activates_at`` (now, or after a publish lead on rotation, so
every replica and verifier has it in its JWKS before anything is signed with it); the newest
activated key signs; when a newer key activates, the older gets ``deactivated_at`` and a
``retire_at`` one access-token lifetime (plus leeway) later; after that it is no longer published.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tsmesh_auth.kek import KeyEncryption
from tsmesh_common.errors import FailedPrecondition, Unavailable

log = logging.getLogger(__name__)

ALG = "EdDSA"
KEYS_LOCK_KEY = 0x7453_6D65_7368_4B45  # advisory lock serializing key creation between replicas
RETIRE_LEEWAY = timedelta(seconds=60)


@dataclass(frozen=True)
class SigningKey:
    """A published key; ``private_key`` is None when this process cannot decrypt it."""

    kid: str
    public_jwk: dict[str, str]
    private_key: Ed25519PrivateKey | None
    activates_at: datetime
    retire_at: datetime | None


def new_kid() -> str:
    return f"{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(6)}"


def _raw(private_key: Ed25519PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


async def insert_key(conn: Any, encryption: KeyEncryption, activates_at: datetime, retire_after: timedelta) -> str:
    """Create a key activating at ``activates_at``; older keys still in service retire after it."""
    private_key = Ed25519PrivateKey.generate()
    kid = new_kid()
    public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(private_key.public_key()))
    jwk = {"kty": public["kty"], "crv": public["crv"], "x": public["x"], "kid": kid, "alg": ALG, "use": "sig"}
    await conn.execute(
        "UPDATE auth.signing_keys SET deactivated_at = $1, retire_at = $2 WHERE deactivated_at IS NULL",
        activates_at,
        activates_at + retire_after,
    )
    await conn.execute(
        "INSERT INTO auth.signing_keys (kid, alg, public_jwk, private_key_enc, kek_id, activates_at)"
        " VALUES ($1, $2, $3::jsonb, $4, $5, $6)",
        kid,
        ALG,
        json.dumps(jwk),
        encryption.seal(kid, _raw(private_key)),
        encryption.kek_id,
        activates_at,
    )
    return kid


async def rotate(pool: Any, encryption: KeyEncryption, lead: timedelta, max_token_lifetime: timedelta) -> str:
    """Add a new signing key that activates after ``lead``; the current one retires later. Returns its kid."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_KEY)
        now = await conn.fetchval("SELECT now()")
        return await insert_key(conn, encryption, now + lead, max_token_lifetime + RETIRE_LEEWAY)


class KeyRing:
    """The keys this replica publishes and signs with, reloaded from the database periodically."""

    def __init__(self, pool: Any, encryption: KeyEncryption, max_token_lifetime: timedelta) -> None:
        self._pool = pool
        self._encryption = encryption
        self._max_token_lifetime = max_token_lifetime
        self._keys: list[SigningKey] = []
        self._loaded_at = float("-inf")
        self._load_lock = asyncio.Lock()

    async def load(self) -> None:
        """Read the published keys (not yet retired) and decrypt their private parts."""
        async with self._load_lock:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(
                    "SELECT kid, public_jwk, private_key_enc, kek_id, activates_at, retire_at FROM auth.signing_keys"
                    " WHERE retire_at IS NULL OR retire_at > now() ORDER BY activates_at"
                )
            keys = []
            for row in rows:
                raw = self._encryption.open(row["kid"], bytes(row["private_key_enc"]))
                private_key = Ed25519PrivateKey.from_private_bytes(raw) if raw is not None else None
                jwk = row["public_jwk"]
                keys.append(
                    SigningKey(
                        kid=row["kid"],
                        public_jwk=json.loads(jwk) if isinstance(jwk, str) else dict(jwk),
                        private_key=private_key,
                        activates_at=row["activates_at"],
                        retire_at=row["retire_at"],
                    )
                )
            self._keys = keys
            self._loaded_at = time.monotonic()

    async def ensure_signing_key(self, production: bool) -> None:
        """Make sure a decryptable key signs: create the first key; in dev, replace one we cannot open."""
        await self.load()
        current = self._active(datetime.now(UTC))
        if current is not None and current.private_key is not None:
            return
        if current is not None and production:
            raise FailedPrecondition(
                f"signing key {current.kid} cannot be decrypted with the configured TSMESH_AUTH_KEK"
                f" (kek id {self._encryption.kek_id}); restore the right key-encryption key"
            )
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_KEY)
            # clock_timestamp(), not now(): now() is when this transaction began, possibly before a
            # replica that held the lock first inserted its key (activates_at = its own start), which
            # would then look not yet active here and make a second key.
            rows = await conn.fetch(
                "SELECT kid, private_key_enc FROM auth.signing_keys WHERE deactivated_at IS NULL"
                " AND activates_at <= clock_timestamp()"
            )
            if any(self._encryption.open(r["kid"], bytes(r["private_key_enc"])) is not None for r in rows):
                kid = None
            else:
                now = await conn.fetchval("SELECT clock_timestamp()")
                kid = await insert_key(conn, self._encryption, now, self._max_token_lifetime + RETIRE_LEEWAY)
        if kid is not None:
            reason = "no usable signing key" if current is None else f"key {current.kid} cannot be decrypted"
            log.warning("generated a new signing key", extra={"kid": kid, "reason": reason})
        await self.load()

    def _active(self, now: datetime) -> SigningKey | None:
        active = None
        for key in self._keys:
            if key.activates_at <= now and (key.retire_at is None or key.retire_at > now):
                active = key
        return active

    def signing_key(self) -> SigningKey:
        """The newest activated key; it is decryptable once :meth:`ensure_signing_key` has run."""
        now = datetime.now(UTC)
        key = self._active(now)
        if key is None or key.private_key is None:
            for candidate in reversed(self._keys):
                if candidate.activates_at <= now and candidate.private_key is not None:
                    return candidate
            raise Unavailable("no signing key available")
        return key

    def jwks(self) -> list[dict[str, str]]:
        """Public JWKs of every key not yet retired (including keys about to activate)."""
        now = datetime.now(UTC)
        return [dict(k.public_jwk) for k in self._keys if k.retire_at is None or k.retire_at > now]

    async def fetch_jwks(self) -> Sequence[dict[str, str]]:
        """The :class:`tsmesh_common.authn.JwksSource` of auth itself: reloads when a kid is unknown."""
        if time.monotonic() - self._loaded_at > 1.0:
            await self.load()
        return self.jwks()

    async def refresh_forever(self, interval: float) -> None:
        """Reload keys every ``interval`` seconds so rotations by other replicas or the CLI show up."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.load()
            except Exception as exc:  # noqa: BLE001 - keep the current keys and retry next period
                log.warning("signing key reload failed", extra={"error": type(exc).__name__})
