"""The shared authenticator with locally verified JWTs (the full attack list lives with auth)."""

from __future__ import annotations

import pytest

from tsmesh_common.errors import Unauthenticated


async def test_valid_jwt_gives_principal_with_tenant_and_scopes(token_mint) -> None:
    principal = await token_mint.authenticator().authenticate(token_mint.token("acme", "read"))
    assert principal.tenant_id == "acme"
    assert principal.scopes == frozenset({"read"})
    assert principal.kind == "jwt"


async def test_expired_and_garbage_tokens_are_refused(token_mint) -> None:
    auth = token_mint.authenticator()
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.authenticate(token_mint.token("acme", ttl=-60))
    for garbage in ("", "x" * 10_000, "ümlaut", "a.b.c"):
        with pytest.raises(Unauthenticated):
            await auth.authenticate(garbage)


async def test_revoked_token_id_is_refused(token_mint) -> None:
    auth = token_mint.authenticator()
    token = token_mint.token("acme")
    principal = await auth.authenticate(token)
    auth.revoke(principal.token_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(token)
