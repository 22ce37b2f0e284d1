"""Auth configuration: defaults, KEK encodings, bad values named by variable; client address rules."""

from __future__ import annotations

import base64
import os

import pytest

from tsmesh_auth.config import AuthConfig, parse_kek
from tsmesh_auth.service import client_address
from tsmesh_common.config import ConfigError


def test_defaults_match_the_contract() -> None:
    cfg = AuthConfig.from_env({})
    assert (cfg.common.grpc_port, cfg.common.metrics_port) == (50053, 9103)
    assert cfg.bcrypt_cost == 12 and cfg.access_ttl_seconds == 900 and cfg.kek is None
    assert cfg.database_url == "postgresql://tsmesh_auth@127.0.0.1:5432/tsmesh"


def test_kek_accepts_base64_urlsafe_and_hex() -> None:
    kek = os.urandom(32)
    for text in (base64.b64encode(kek).decode(), base64.urlsafe_b64encode(kek).decode().rstrip("="), kek.hex()):
        assert parse_kek(text, "TSMESH_AUTH_KEK") == kek


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TSMESH_AUTH_BCRYPT_COST", "3"),
        ("TSMESH_AUTH_BCRYPT_COST", "x"),
        ("TSMESH_AUTH_ACCESS_TTL_SECONDS", "5"),
        ("TSMESH_AUTH_AUDIT_CHECKPOINT_DIR", "/nonexistent/tsmesh-checkpoints"),
        ("TSMESH_AUTH_AUDIT_CHECKPOINT_SECONDS", "0"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as bad:
        AuthConfig.from_env({name: value})
    assert bad.value.variable == name


def test_both_kek_sources_is_an_error() -> None:
    kek = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(ConfigError, match="not both"):
        AuthConfig.from_env({"TSMESH_AUTH_KEK": kek, "TSMESH_AUTH_KEK_FILE": "/tmp/x"})


class _Ctx:
    def __init__(self, peer: str, md: tuple[tuple[str, str], ...] = ()) -> None:
        self._peer, self._md = peer, md

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._md


def test_client_address_comes_from_the_transport_unless_the_header_is_trusted() -> None:
    spoofed = (("x-client-address", "1.2.3.4"),)
    assert client_address(_Ctx("ipv4:10.0.0.7:5555", spoofed), trust_header=False) == "10.0.0.7"
    assert client_address(_Ctx("ipv6:[::1]:5555"), trust_header=False) == "::1"
    assert client_address(_Ctx("ipv4:10.0.0.7:5555", spoofed), trust_header=True) == "1.2.3.4"
