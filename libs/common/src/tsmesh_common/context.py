"""Per-request context carried in contextvars: request id and the authenticated principal."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from tsmesh_common.errors import PermissionDenied, Unauthenticated

REQUEST_ID_HEADER = "x-request-id"

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("tsmesh_request_id", default=None)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the tenant always comes from here, never from a request body."""

    tenant_id: str
    subject: str
    scopes: frozenset[str]
    expires_at: float | None
    token_id: str
    kind: str  # "jwt" or "api_token"

    def require(self, scope: str) -> None:
        if scope not in self.scopes and "admin" not in self.scopes:
            raise PermissionDenied(f"scope {scope!r} required")


principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("tsmesh_principal", default=None)


def current_principal(scope: str | None = None) -> Principal:
    """The caller of the current RPC, optionally checked for a scope."""
    principal = principal_var.get()
    if principal is None:
        raise Unauthenticated("authentication required")
    if scope is not None:
        principal.require(scope)
    return principal
