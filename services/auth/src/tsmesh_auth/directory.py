"""Tenants and users: creation (admin CLI) and the lookup Login needs."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from tsmesh_auth.passwords import PasswordHasher, check_password_rules, normalize_email
from tsmesh_common.errors import AlreadyExists, InvalidArgument, NotFound

ROLE_SCOPES = {"admin": ("admin", "read", "write"), "writer": ("read", "write"), "reader": ("read",)}
_TENANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,62}$")


@dataclass(frozen=True)
class LoginUser:
    """The user row Login needs."""

    id: str
    tenant_id: str
    password_hash: str
    role: str
    disabled: bool

    @property
    def scopes(self) -> tuple[str, ...]:
        return ROLE_SCOPES[self.role]


def validate_tenant_name(name: str) -> str:
    name = name.strip().lower()
    if not _TENANT_NAME.match(name):
        raise InvalidArgument("tenant", "must be 1-63 characters of a-z, 0-9, '-' or '_', starting alphanumeric")
    return name


class Directory:
    """Tenants and users in schema ``auth``."""

    def __init__(self, pool: Any, hasher: PasswordHasher) -> None:
        self._pool = pool
        self._hasher = hasher

    async def create_tenant(self, name: str, *, if_not_exists: bool = False) -> tuple[str, bool]:
        """The tenant id, and whether it was created now."""
        name = validate_tenant_name(name)
        async with self._pool.acquire() as conn:
            created = await conn.fetchval(
                "INSERT INTO auth.tenants (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
                secrets.token_hex(8),
                name,
            )
            if created is not None:
                return str(created), True
            if not if_not_exists:
                raise AlreadyExists(f"tenant {name!r} already exists")
            existing = await conn.fetchval("SELECT id FROM auth.tenants WHERE name = $1", name)
        return str(existing), False

    async def tenant_id(self, name_or_id: str) -> str:
        async with self._pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT id FROM auth.tenants WHERE name = $1 OR id = $1 ORDER BY (name = $1) DESC LIMIT 1",
                name_or_id.strip().lower(),
            )
        if found is None:
            raise NotFound("no such tenant")
        return str(found)

    async def create_user(self, tenant: str, email: str, password: str, role: str) -> str:
        """A new user; the password is checked against the rules and stored as a bcrypt hash."""
        if role not in ROLE_SCOPES:
            raise InvalidArgument("role", "must be admin, writer or reader")
        email = normalize_email(email)
        check_password_rules(password, email)
        tenant_id = await self.tenant_id(tenant)
        password_hash = await self._hasher.hash(password)
        async with self._pool.acquire() as conn:
            user_id = await conn.fetchval(
                "INSERT INTO auth.users (id, tenant_id, email, password_hash, role) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (tenant_id, email) DO NOTHING RETURNING id",
                uuid.uuid4(),
                tenant_id,
                email,
                password_hash,
                role,
            )
        if user_id is None:
            raise AlreadyExists("a user with this email already exists in the tenant")
        return str(user_id)

    async def login_user(self, tenant: str, email: str) -> LoginUser | None:
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT u.id, u.tenant_id, u.password_hash, u.role, u.disabled FROM auth.users u"
                " JOIN auth.tenants t ON t.id = u.tenant_id WHERE (t.name = $1 OR t.id = $1) AND u.email = $2"
                " LIMIT 1",
                tenant.strip().lower(),
                email,
            )
        if row is None:
            return None
        return LoginUser(str(row["id"]), row["tenant_id"], row["password_hash"], row["role"], row["disabled"])

    async def user_scopes(self, conn: Any, user_id: Any) -> tuple[str, ...] | None:
        """The scopes of an enabled user (for Refresh), None when gone or disabled."""
        row = await conn.fetchrow("SELECT role, disabled FROM auth.users WHERE id = $1", user_id)
        if row is None or row["disabled"]:
            return None
        return ROLE_SCOPES[row["role"]]
