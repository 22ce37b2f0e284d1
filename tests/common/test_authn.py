"""The shared authenticator with locally verified JWTs (the full attack list lives with auth)."""

from __future__ import annotations

import jwt
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


async def test_remembered_jwt_still_honours_revocation_and_expiry(token_mint) -> None:
    from tsmesh_common.authn import Authenticator, AuthenticatorConfig

    now = [1_000_000.0]
    auth = Authenticator(
        AuthenticatorConfig(issuer=token_mint.issuer, audience=token_mint.audience),
        token_mint.jwks,
        token_mint.authenticator()._introspection,
        clock=lambda: now[0],
    )
    import time as _time

    token = token_mint.token("acme", ttl=60)
    first = await auth.authenticate(token)
    assert await auth.authenticate(token) is first  # served from the verified-token cache
    now[0] = _time.time() + 120  # past exp + leeway: re-verified, hence refused
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.authenticate(token)
    now[0] = _time.time()
    other = token_mint.token("acme")
    principal = await auth.authenticate(other)
    auth.revoke(principal.token_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(other)


async def test_withdrawn_key_forgets_tokens_it_verified(token_mint) -> None:
    import asyncio

    auth = token_mint.authenticator()
    token = token_mint.token("acme")
    await auth.authenticate(token)
    token_mint.jwks.keys.clear()
    await asyncio.sleep(1.05)
    foreign = jwt.encode({"sub": "s"}, token_mint.private_key, algorithm="EdDSA", headers={"kid": "rotated-away"})
    with pytest.raises(Unauthenticated):  # an unknown kid refetches the JWKS, which drops the old key
        await auth.authenticate(foreign)
    with pytest.raises(Unauthenticated):
        await auth.authenticate(token)


async def test_malformed_revocation_event_is_ignored(token_mint) -> None:
    auth = token_mint.authenticator()
    auth._revocation_event(b"abc not-a-number")
    auth._revocation_event(b"")
    auth._revocation_event(b"tok-1 99999999999")
    token = token_mint.token("acme", jti="tok-1")
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(token)
