"""No password, token or key ever appears in a log line, whatever the level."""

from __future__ import annotations

import base64
import io
import logging

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from tsmesh.v1 import auth_pb2

from tsmesh_common.logs import JsonFormatter


@pytest.fixture
def captured_logs():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("auth"))
    plain = io.StringIO()
    raw_handler = logging.StreamHandler(plain)
    raw_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s %(args)s"))
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.addHandler(raw_handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lambda: stream.getvalue() + plain.getvalue()
    finally:
        root.removeHandler(handler)
        root.removeHandler(raw_handler)
        root.setLevel(old_level)


async def test_no_secret_appears_in_any_log_line(auth_server, captured_logs) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    secrets: list[str] = [auth_server.password]
    pair = await auth_server.login(name, email)
    secrets += [pair.access_token, pair.refresh_token]
    with pytest.raises(grpc.aio.AioRpcError):
        await auth_server.login(name, email, "Wrong-Password-Typed-Here")
    secrets.append("Wrong-Password-Typed-Here")
    refreshed = (
        await auth_server.stub.Refresh(
            auth_pb2.RefreshRequest(refresh_token=pair.refresh_token), metadata=auth_server.md()
        )
    ).tokens
    secrets += [refreshed.access_token, refreshed.refresh_token]
    with pytest.raises(grpc.aio.AioRpcError):  # reuse, logged as a refusal
        await auth_server.stub.Refresh(
            auth_pb2.RefreshRequest(refresh_token=pair.refresh_token), metadata=auth_server.md()
        )
    created = await auth_server.stub.CreateApiToken(
        auth_pb2.CreateApiTokenRequest(name="ci", scopes=["read"]), metadata=auth_server.md(refreshed.access_token)
    )
    secrets.append(created.secret)
    await auth_server.stub.Introspect(auth_pb2.IntrospectRequest(token=created.secret))
    rotated = await auth_server.stub.RotateApiToken(
        auth_pb2.RotateApiTokenRequest(id=created.token.id), metadata=auth_server.md(refreshed.access_token)
    )
    secrets.append(rotated.secret)
    await auth_server.stub.RevokeApiToken(
        auth_pb2.RevokeApiTokenRequest(id=created.token.id), metadata=auth_server.md(refreshed.access_token)
    )
    with pytest.raises(grpc.aio.AioRpcError):  # a refused bearer token is logged as a refusal
        await auth_server.stub.ListApiTokens(auth_pb2.ListApiTokensRequest(), metadata=auth_server.md(rotated.secret))
    key = auth_server.parts.keyring.signing_key().private_key
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    secrets += [base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), raw.hex()]
    kek = auth_server.parts.config.kek
    secrets += [base64.b64encode(kek).decode(), kek.hex()]

    logs = captured_logs()
    assert "call refused" in logs and "invalid refresh token" in logs  # the flow was logged, at DEBUG too
    for secret in secrets:
        assert secret not in logs
        for piece in (secret[:24], secret[-24:]) if len(secret) > 40 else ():
            assert piece not in logs
