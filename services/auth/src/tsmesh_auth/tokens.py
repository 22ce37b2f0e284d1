"""Issuing access JWTs (EdDSA, with ``kid``) with the claims every service verifies."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jwt

from tsmesh_auth.keys import ALG, KeyRing


@dataclass(frozen=True)
class IssuedToken:
    token: str
    jti: str
    expires_at: int


class AccessTokenIssuer:
    """Signs short-lived access tokens with the ring's current key."""

    def __init__(
        self, keyring: KeyRing, issuer: str, audience: str, ttl_seconds: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._keyring = keyring
        self._issuer = issuer
        self._audience = audience
        self.ttl_seconds = ttl_seconds
        self._clock = clock

    def issue(self, tenant_id: str, subject: str, scopes: Sequence[str]) -> IssuedToken:
        key = self._keyring.signing_key()
        assert key.private_key is not None
        now = int(self._clock())
        jti = uuid.uuid4().hex
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": subject,
            "tid": tenant_id,
            "scope": " ".join(sorted(scopes)),
            "jti": jti,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl_seconds,
        }
        token = jwt.encode(claims, key.private_key, algorithm=ALG, headers={"kid": key.kid})
        return IssuedToken(token=token, jti=jti, expires_at=now + self.ttl_seconds)
