"""Auth configuration: defaults, KEK encodings, bad values named by variable; client address rules."""

from __future__ import annotations

import base64
import os

import pytest

from tsmesh_auth.config import AuthConfig, parse_kek
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


def test_service_secrets_are_kept_as_digests_and_validated(tmp_path) -> None:
    secret = "s" * 32
    cfg = AuthConfig.from_env({"TSMESH_AUTH_SERVICE_SECRETS": f"gateway:{secret}, query:{'q' * 40}"})
    assert sorted(cfg.service_secrets) == ["gateway", "query"]
    assert secret not in repr(cfg) and secret.encode() not in b"".join(cfg.service_secrets.values())
    (tmp_path / "gateway").write_text(secret + "\n")
    (tmp_path / "..data").mkdir()  # a mounted Secret's own entries are skipped
    assert sorted(AuthConfig.from_env({"TSMESH_AUTH_SERVICE_SECRETS_DIR": str(tmp_path)}).service_secrets) == [
        "gateway"
    ]
    for bad in ("gateway", "gateway:short", f"Gate Way:{secret}"):
        with pytest.raises(ConfigError, match="TSMESH_AUTH_SERVICE_SECRETS"):
            AuthConfig.from_env({"TSMESH_AUTH_SERVICE_SECRETS": bad})
    with pytest.raises(ConfigError, match="TSMESH_AUTH_SERVICE_SECRETS_DIR"):
        AuthConfig.from_env({"TSMESH_AUTH_SERVICE_SECRETS_DIR": str(tmp_path / "absent")})


def test_access_tokens_may_not_outlive_the_mesh_wide_maximum() -> None:
    with pytest.raises(ConfigError, match="TSMESH_AUTH_ACCESS_TTL_SECONDS"):
        AuthConfig.from_env({"TSMESH_AUTH_ACCESS_TTL_SECONDS": "7200", "TSMESH_JWT_MAX_LIFETIME_SECONDS": "3600"})
    assert AuthConfig.from_env({}).common.jwt_max_lifetime_seconds == 86_400
