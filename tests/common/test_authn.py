"""The shared authenticator with locally verified JWTs (the full attack list lives with auth)."""

from __future__ import annotations

import time

import jwt
import pytest
from testkit import NoIntrospection

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


async def test_a_jwt_living_longer_than_the_maximum_is_refused(token_mint) -> None:
    """A validly signed token with exp 10 years out is refused (24 h by default, configurable)."""
    auth = token_mint.authenticator()
    with pytest.raises(Unauthenticated, match="invalid"):
        await auth.authenticate(token_mint.token("acme", ttl=10 * 365 * 86_400))
    now = int(time.time())
    with pytest.raises(Unauthenticated, match="invalid"):  # a recent iat does not hide a far exp
        await auth.authenticate(token_mint.token("acme", iat=now + 9 * 365 * 86_400, exp=now + 10 * 365 * 86_400))
    assert (await auth.authenticate(token_mint.token("acme", ttl=86_400))).tenant_id == "acme"
    from tsmesh_common.authn import Authenticator, AuthenticatorConfig

    short = Authenticator(
        AuthenticatorConfig(token_mint.issuer, token_mint.audience, max_token_lifetime_seconds=600),
        token_mint.jwks,
        NoIntrospection(),
    )
    with pytest.raises(Unauthenticated):
        await short.authenticate(token_mint.token("acme", ttl=3600))


def test_the_maximum_lifetime_comes_from_the_environment() -> None:
    from tsmesh_common.authn import AuthenticatorConfig
    from tsmesh_common.config import CommonConfig, ConfigError

    def lifetime(environ: dict[str, str]) -> float:
        common = CommonConfig.from_env(environ, service="t", grpc_port=0, metrics_port=0)
        return AuthenticatorConfig.from_common(common).max_token_lifetime_seconds

    assert lifetime({}) == 86_400
    assert lifetime({"TSMESH_JWT_MAX_LIFETIME_SECONDS": "3600"}) == 3600
    for bad in ("0", "forever", str(400 * 86_400)):
        with pytest.raises(ConfigError, match="TSMESH_JWT_MAX_LIFETIME_SECONDS"):
            lifetime({"TSMESH_JWT_MAX_LIFETIME_SECONDS": bad})


class _Revocations:
    """A durable revocation list held in memory; ``down`` makes it fail like an unreachable auth."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, float]] = []
        self.down = False
        self.calls = 0

    async def list_revocations(self) -> list[tuple[str, float]]:
        self.calls += 1
        if self.down:
            raise ConnectionError("auth unreachable")
        return list(self.entries)


async def test_no_jwt_is_accepted_before_the_revocation_list_is_loaded(token_mint) -> None:
    from tsmesh_common.authn import Authenticator, AuthenticatorConfig
    from tsmesh_common.errors import Unavailable

    token = token_mint.token("acme")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    source = _Revocations()
    source.entries.append((jti, time.time() + 300))
    source.down = True
    config = AuthenticatorConfig(token_mint.issuer, token_mint.audience)
    auth = Authenticator(config, token_mint.jwks, NoIntrospection(), revocations=source)
    with pytest.raises(Unavailable):
        await auth.authenticate(token)
    source.down = False
    with pytest.raises(Unauthenticated, match="revoked"):
        await auth.authenticate(token)
    other = token_mint.token("acme")
    await auth.authenticate(other)
    assert source.calls == 2  # loaded once, not per call
