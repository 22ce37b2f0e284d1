"""The audit log's keys, derived from the KEK and never stored (ADR 0107).

The chain key MACs every row, so a database role without the KEK cannot write a row that verifies;
the Ed25519 key signs the checkpoints exported outside PostgreSQL. ``key_id`` names them, not their value.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tsmesh_auth.kek import KeyEncryption


class AuditKeys:
    """HMAC-SHA256 of chain rows and Ed25519 signatures of checkpoints, both under keys derived from the KEK."""

    def __init__(self, chain_key: bytes, signing_seed: bytes) -> None:
        self._chain_key = chain_key
        self._signer = Ed25519PrivateKey.from_private_bytes(signing_seed)
        self._public = self._signer.public_key()
        self.key_id = hashlib.sha256(b"tsmesh-audit-key-id" + chain_key).hexdigest()[:16]

    @classmethod
    def from_kek(cls, encryption: KeyEncryption) -> AuditKeys:
        return cls(encryption.derive(b"audit-chain v1"), encryption.derive(b"audit-checkpoint v1"))

    def __repr__(self) -> str:
        return f"AuditKeys(key_id={self.key_id})"

    def mac(self, message: bytes) -> bytes:
        return hmac.new(self._chain_key, message, hashlib.sha256).digest()

    def sign(self, message: bytes) -> bytes:
        return self._signer.sign(message)

    def signed(self, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        try:
            self._public.verify(signature, message)
        except InvalidSignature:
            return False
        return True
