"""Every attack of the issue list, each refused with UNAUTHENTICATED and a reason that leaks nothing."""

from __future__ import annotations

import base64
import json
import time
import uuid

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tsmesh.v1 import auth_pb2

from tsmesh_common.errors import Unauthenticated

BLAND = {"invalid token", "token expired", "token revoked", "authentication required", "malformed authorization header"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(tenant_id: str, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": "tsmesh-auth",
        "aud": "tsmesh",
        "sub": "attacker",
        "tid": tenant_id,
        "scope": "read write admin",
        "jti": uuid.uuid4().hex,
        "iat": now,
        "nbf": now,
        "exp": now + 300,
    }
    claims.update(overrides)
    return claims


def _forgeries(server, tenant_id: str, valid: str) -> dict[str, str]:
    key = server.parts.keyring.signing_key()
    assert key.private_key is not None
    sign = lambda claims, **h: jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, **h})  # noqa: E731
    header, payload, signature = valid.split(".")
    public_pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw_public = base64.urlsafe_b64decode(key.public_jwk["x"] + "==")
    hs_header = _b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "JWT"}).encode())
    hs_payload = _b64(json.dumps(_claims(tenant_id)).encode())
    import hashlib
    import hmac

    def hs256(secret: bytes) -> str:
        mac = hmac.new(secret, f"{hs_header}.{hs_payload}".encode(), hashlib.sha256).digest()
        return f"{hs_header}.{hs_payload}.{_b64(mac)}"

    none_header = _b64(json.dumps({"alg": "none", "kid": key.kid}).encode())
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["tid"] = "someone-else"
    other_key = Ed25519PrivateKey.generate()
    return {
        "alg none": f"{none_header}.{hs_payload}.",
        "HS256 with the public key (PEM)": hs256(public_pem),
        "HS256 with the public key (raw)": hs256(raw_public),
        "expired": sign(_claims(tenant_id, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)),
        "not yet valid": sign(_claims(tenant_id, nbf=int(time.time()) + 3600)),
        "wrong issuer": sign(_claims(tenant_id, iss="evil")),
        "wrong audience": sign(_claims(tenant_id, aud="other")),
        "unknown kid": jwt.encode(_claims(tenant_id), other_key, algorithm="EdDSA", headers={"kid": "nope"}),
        "right kid, wrong key": jwt.encode(_claims(tenant_id), other_key, algorithm="EdDSA", headers={"kid": key.kid}),
        "tampered payload": f"{header}.{_b64(json.dumps(claims).encode())}.{signature}",
        "tampered signature": f"{header}.{payload}.{signature[:-4]}{'AAAA' if signature[-4:] != 'AAAA' else 'BBBB'}",
        "missing tenant": sign({k: v for k, v in _claims(tenant_id).items() if k != "tid"}),
        "empty": "",
        "huge": "a" * 9_000,
        "huge jwt-shaped": f"{header}.{'A' * 12_000}.{signature}",
        "beyond the transport limit": "a" * 100_000,
        "non-ascii": "eyJ\u00e9\u00e9.\u4e2d\u6587.\u0000",
        "two parts": f"{header}.{payload}",
        "garbage api token": "tsm_0123456789abcdef_" + "A" * 43,
        "api token bad shape": "tsm_../../etc/passwd",
    }


async def test_every_forged_or_malformed_token_is_refused(auth_server) -> None:
    _, tenant_id, admin = await auth_server.admin_token()
    for name, token in _forgeries(auth_server, tenant_id, admin).items():
        md = [("x-client-address", auth_server.address)]
        if token.isascii() and token:
            md.append(("authorization", f"Bearer {token}"))
        try:
            await auth_server.stub.ListApiTokens(auth_pb2.ListApiTokensRequest(), metadata=tuple(md), timeout=5)
        except grpc.aio.AioRpcError as refused:
            if name.startswith(("huge", "beyond")) and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                assert "metadata size" in (refused.details() or "")  # gRPC's own header limit (8 KiB)
            else:
                assert refused.code() == grpc.StatusCode.UNAUTHENTICATED, name
                assert refused.details() in BLAND, (name, refused.details())
        else:
            pytest.fail(f"{name}: accepted")
        with pytest.raises(Unauthenticated) as direct:
            await auth_server.parts.authenticator.authenticate(token)
        assert direct.value.message in BLAND, name
        answer = await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=token), timeout=5)
        assert not answer.active, name
        assert answer == auth_pb2.IntrospectResponse(active=False), name


async def test_non_ascii_bearer_is_refused_by_the_authenticator(auth_server) -> None:
    with pytest.raises(Exception, match="invalid token"):
        await auth_server.parts.authenticator.authenticate("bearer-\u00e9\u00e9\u00e9")


async def test_valid_token_passes_so_the_refusals_above_mean_something(auth_server) -> None:
    _, tenant_id, admin = await auth_server.admin_token()
    listed = await auth_server.stub.ListApiTokens(auth_pb2.ListApiTokensRequest(), metadata=auth_server.md(admin))
    assert list(listed.tokens) == []
    answer = await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=admin))
    assert answer.active and answer.tenant_id == tenant_id
