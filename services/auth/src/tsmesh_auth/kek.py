"""Envelope encryption of signing keys at rest with the key-encryption key (KEK).

Private signing keys live in ``auth.signing_keys`` encrypted with AES-256-GCM under the KEK (the kid
is the associated data, so a blob cannot be moved to another row). Production reads the KEK from
``TSMESH_AUTH_KEK``/``TSMESH_AUTH_KEK_FILE`` and refuses to start without one; dev mode generates a
development KEK once and keeps it in ``auth.dev_kek`` so the CLI and restarts share it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tsmesh_common.errors import FailedPrecondition

log = logging.getLogger(__name__)

NONCE_BYTES = 12


class KeyEncryption:
    """Seals and opens private key bytes with one KEK; ``kek_id`` identifies the KEK, not its value."""

    def __init__(self, kek: bytes) -> None:
        if len(kek) != 32:
            raise ValueError("the key-encryption key must be 32 bytes")
        self._aead = AESGCM(kek)
        self._kek = kek
        self.kek_id = hashlib.sha256(b"tsmesh-kek-id" + kek).hexdigest()[:16]

    def seal(self, kid: str, plaintext: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, kid.encode())

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key for one purpose (HKDF-SHA256 of the KEK): never stored, differs per purpose."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tsmesh-auth " + purpose).derive(self._kek)

    def open(self, kid: str, blob: bytes) -> bytes | None:
        """The plaintext, or None when the blob was sealed under another KEK or tampered with."""
        try:
            return self._aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], kid.encode())
        except (InvalidTag, ValueError):
            return None


async def resolve_kek(pool: Any, configured: bytes | None, production: bool, *, quiet: bool = False) -> KeyEncryption:
    """The configured KEK; in dev mode only, the stored development KEK (created on first use).

    ``quiet`` keeps the dev-mode notice out of the log (the admin CLI, whose stderr is its answer).
    """
    if configured is not None:
        return KeyEncryption(configured)
    if production:
        raise FailedPrecondition("TSMESH_AUTH_KEK or TSMESH_AUTH_KEK_FILE is required in production")
    async with pool.acquire() as conn:
        inserted = await conn.fetchval(
            "INSERT INTO auth.dev_kek (id, kek) VALUES (1, $1) ON CONFLICT (id) DO NOTHING RETURNING id",
            os.urandom(32),
        )
        stored = await conn.fetchval("SELECT kek FROM auth.dev_kek WHERE id = 1")
    if not quiet:
        log.warning(
            "dev mode: generated a development key-encryption key (set TSMESH_AUTH_KEK in production)"
            if inserted is not None
            else "dev mode: using the stored development key-encryption key (TSMESH_AUTH_KEK is not set)"
        )
    return KeyEncryption(bytes(stored))
