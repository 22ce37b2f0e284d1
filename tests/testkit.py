"""What tests share besides fixtures: throwaway databases, token minting, polling.

Importable from any test folder as ``testkit`` (test modules must never import ``conftest``: with a
conftest.py per folder, which one that name means depends on the collection order).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP_SQL = (ROOT / "deploy" / "postgres" / "bootstrap.sql").read_text()
PG_HOST = os.environ.get("TSMESH_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("TSMESH_TEST_PG_PORT", "5432"))
PG_SUPERUSER = os.environ.get("TSMESH_TEST_PG_SUPERUSER", "postgres")
REDIS_URL = os.environ.get("TSMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass(frozen=True)
class Database:
    """A throwaway database with the tsmesh roles and schemas; DSNs per role."""

    name: str

    def dsn(self, role: str = PG_SUPERUSER) -> str:
        return f"postgresql://{role}@{PG_HOST}:{PG_PORT}/{self.name}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn(PG_SUPERUSER)


async def create_database() -> Database:
    name = f"tsmesh_t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(f"postgresql://{PG_SUPERUSER}@{PG_HOST}:{PG_PORT}/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(f"postgresql://{PG_SUPERUSER}@{PG_HOST}:{PG_PORT}/{name}")
    try:
        await conn.execute(BOOTSTRAP_SQL)
    finally:
        await conn.close()
    return Database(name)


async def drop_database(db: Database) -> None:
    conn = await asyncpg.connect(f"postgresql://{PG_SUPERUSER}@{PG_HOST}:{PG_PORT}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
    finally:
        await conn.close()


async def eventually(predicate: Callable[[], Any], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll an async or sync predicate until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


class StaticJwks:
    """A JWKS source holding test keys: real signature verification without the auth service."""

    def __init__(self) -> None:
        self.keys: list[dict[str, str]] = []

    async def fetch_jwks(self) -> list[dict[str, str]]:
        return list(self.keys)


class NoIntrospection:
    """For tests that only use JWTs: every API token is unknown."""

    async def introspect(self, token: str) -> None:
        return None


class TokenMint:
    """Signs access JWTs with a fresh Ed25519 key published through a :class:`StaticJwks`."""

    issuer = "tsmesh-auth"
    audience = "tsmesh"

    def __init__(self) -> None:
        import json

        import jwt
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        self._jwt = jwt
        self.kid = f"test-{uuid.uuid4().hex[:8]}"
        self.private_key = Ed25519PrivateKey.generate()
        public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key()))
        self.jwks = StaticJwks()
        self.jwks.keys.append({**public, "kid": self.kid, "alg": "EdDSA", "use": "sig"})

    def token(self, tenant_id: str, scopes: str = "read write", ttl: float = 300.0, **claims: object) -> str:
        now = int(time.time())
        payload = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "user-1",
            "tid": tenant_id,
            "scope": scopes,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + int(ttl),
            **claims,
        }
        return str(self._jwt.encode(payload, self.private_key, algorithm="EdDSA", headers={"kid": self.kid}))

    def authenticator(self):  # type: ignore[no-untyped-def]
        from tsmesh_common.authn import Authenticator, AuthenticatorConfig

        config = AuthenticatorConfig(issuer=self.issuer, audience=self.audience)
        return Authenticator(config, self.jwks, NoIntrospection())
