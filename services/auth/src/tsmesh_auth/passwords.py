"""Password hashing (bcrypt, off the event loop), password rules and email normalisation."""

from __future__ import annotations

import asyncio
import re
import unicodedata

import bcrypt

from tsmesh_common.errors import InvalidArgument

MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_BYTES = 72  # bcrypt ignores anything longer; refuse it rather than truncate silently
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")


def normalize_email(email: str) -> str:
    """NFKC, trimmed, lower-cased; :class:`InvalidArgument` on anything that is not an address."""
    normalized = unicodedata.normalize("NFKC", email).strip().lower()
    if len(normalized) > 254 or not _EMAIL.match(normalized):
        raise InvalidArgument("email", "is not a valid email address")
    return normalized


def check_password_rules(password: str, email: str) -> None:
    """Minimum rules: 12+ characters, at most 72 bytes, not a repeated character, not the email."""
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidArgument("password", f"must be at least {MIN_PASSWORD_CHARS} characters")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidArgument("password", f"must be at most {MAX_PASSWORD_BYTES} bytes")
    if len(set(password)) < 4:
        raise InvalidArgument("password", "is too simple")
    if password.strip().lower() in (email, email.split("@", 1)[0]):
        raise InvalidArgument("password", "must not be the email address")


class PasswordHasher:
    """bcrypt with a configurable cost; verification of an unknown user costs the same as a real one."""

    def __init__(self, cost: int) -> None:
        self.cost = cost
        self._dummy = bcrypt.hashpw(b"tsmesh-dummy-password", bcrypt.gensalt(cost))

    async def hash(self, password: str) -> str:
        digest = await asyncio.to_thread(bcrypt.hashpw, password.encode(), bcrypt.gensalt(self.cost))
        return digest.decode()

    async def verify(self, password: str, stored: str | None) -> bool:
        """True when ``password`` matches ``stored``; with ``stored=None`` burns the same bcrypt time."""
        candidate = password.encode()
        too_long = len(candidate) > MAX_PASSWORD_BYTES
        if too_long:
            candidate = candidate[:MAX_PASSWORD_BYTES]
        target = stored.encode() if stored is not None else self._dummy
        try:
            ok = await asyncio.to_thread(bcrypt.checkpw, candidate, target)
        except ValueError:
            return False
        return ok and stored is not None and not too_long
