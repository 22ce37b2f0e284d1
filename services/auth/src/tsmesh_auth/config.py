"""Configuration of the auth service, read from the environment and validated at start."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tsmesh_common.config import CommonConfig, ConfigError, Env

DEFAULT_DATABASE_URL = "postgresql://tsmesh_auth@127.0.0.1:5432/tsmesh"


def parse_kek(text: str, variable: str) -> bytes:
    """A 256-bit key-encryption key written as base64 (standard or URL-safe) or 64 hex digits."""
    text = text.strip()
    candidates: list[bytes] = []
    if len(text) == 64:
        with contextlib.suppress(ValueError):
            candidates.append(bytes.fromhex(text))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, ValueError):
            candidates.append(decode(text + "=" * (-len(text) % 4)))
    for candidate in candidates:
        if len(candidate) == 32:
            return candidate
    raise ConfigError(variable, "must be 32 bytes encoded as base64 or 64 hex digits")


@dataclass(frozen=True)
class AuthConfig:
    """Everything the auth service needs; secrets (the KEK) are held as bytes and never printed."""

    common: CommonConfig
    database_url: str
    kek: bytes | None
    bcrypt_cost: int
    access_ttl_seconds: int
    refresh_ttl_seconds: int
    refresh_reuse_grace_seconds: float
    api_token_grace_seconds: int
    introspect_cache_seconds: float
    key_refresh_seconds: float
    key_publish_lead_seconds: float
    login_free_attempts_account_address: int
    login_free_attempts_account: int
    login_free_attempts_address: int
    login_base_delay_seconds: float
    login_max_delay_seconds: float
    login_max_account_delay_seconds: float
    trust_client_address_header: bool
    db_pool_size: int
    audit_checkpoint_dir: Path | None
    audit_checkpoint_seconds: float

    @property
    def production(self) -> bool:
        return self.common.production

    def __repr__(self) -> str:
        return f"AuthConfig(database_url=<set>, kek={'<set>' if self.kek else None}, bcrypt_cost={self.bcrypt_cost})"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> AuthConfig:
        env = Env(environ)
        common = CommonConfig.from_env(environ, service="auth", grpc_port=50053, metrics_port=9103)
        return cls(
            common=common,
            database_url=env.get_str("TSMESH_DATABASE_URL", DEFAULT_DATABASE_URL, insecure_default=True),
            kek=_read_kek(env),
            bcrypt_cost=env.get_int("TSMESH_AUTH_BCRYPT_COST", 12, minimum=4, maximum=31),
            access_ttl_seconds=env.get_int("TSMESH_AUTH_ACCESS_TTL_SECONDS", 900, minimum=30, maximum=86_400),
            refresh_ttl_seconds=env.get_int("TSMESH_AUTH_REFRESH_TTL_SECONDS", 30 * 86_400, minimum=60),
            refresh_reuse_grace_seconds=env.get_float("TSMESH_AUTH_REFRESH_REUSE_GRACE_SECONDS", 2.0, minimum=0.0),
            api_token_grace_seconds=env.get_int("TSMESH_AUTH_API_TOKEN_GRACE_SECONDS", 3600, minimum=0),
            introspect_cache_seconds=env.get_float("TSMESH_AUTH_INTROSPECT_CACHE_SECONDS", 10.0, minimum=0.0),
            key_refresh_seconds=env.get_float("TSMESH_AUTH_KEY_REFRESH_SECONDS", 10.0, minimum=0.1),
            key_publish_lead_seconds=env.get_float("TSMESH_AUTH_KEY_PUBLISH_LEAD_SECONDS", 30.0, minimum=0.0),
            login_free_attempts_account_address=env.get_int(
                "TSMESH_AUTH_LOGIN_FREE_ATTEMPTS_ACCOUNT_ADDRESS", 5, minimum=1
            ),
            login_free_attempts_account=env.get_int("TSMESH_AUTH_LOGIN_FREE_ATTEMPTS_ACCOUNT", 50, minimum=1),
            login_free_attempts_address=env.get_int("TSMESH_AUTH_LOGIN_FREE_ATTEMPTS_ADDRESS", 200, minimum=1),
            login_base_delay_seconds=env.get_float("TSMESH_AUTH_LOGIN_BASE_DELAY_SECONDS", 1.0, minimum=0.0),
            login_max_delay_seconds=env.get_float("TSMESH_AUTH_LOGIN_MAX_DELAY_SECONDS", 900.0, minimum=0.0),
            login_max_account_delay_seconds=env.get_float(
                "TSMESH_AUTH_LOGIN_MAX_ACCOUNT_DELAY_SECONDS", 60.0, minimum=0.0
            ),
            trust_client_address_header=env.get_bool("TSMESH_AUTH_TRUST_CLIENT_ADDRESS_HEADER", False),
            db_pool_size=env.get_int("TSMESH_AUTH_DB_POOL_SIZE", 10, minimum=1, maximum=200),
            audit_checkpoint_dir=_read_checkpoint_dir(env),
            audit_checkpoint_seconds=env.get_float("TSMESH_AUTH_AUDIT_CHECKPOINT_SECONDS", 300.0, minimum=1.0),
        )


def _read_checkpoint_dir(env: Env) -> Path | None:
    """Where signed audit checkpoints are written as files (besides the log); must be a writable directory."""
    text = env.raw("TSMESH_AUTH_AUDIT_CHECKPOINT_DIR")
    if not text:
        return None
    path = Path(text)
    if not path.is_dir():
        raise ConfigError("TSMESH_AUTH_AUDIT_CHECKPOINT_DIR", "must be an existing directory")
    return path


def _read_kek(env: Env) -> bytes | None:
    inline = env.raw("TSMESH_AUTH_KEK")
    path = env.raw("TSMESH_AUTH_KEK_FILE")
    if inline is not None and path is not None:
        raise ConfigError("TSMESH_AUTH_KEK_FILE", "set either TSMESH_AUTH_KEK or TSMESH_AUTH_KEK_FILE, not both")
    if path is not None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError("TSMESH_AUTH_KEK_FILE", f"cannot read the file ({exc.strerror})") from None
        return parse_kek(text, "TSMESH_AUTH_KEK_FILE")
    if inline is not None:
        return parse_kek(inline, "TSMESH_AUTH_KEK")
    if env.production:
        raise ConfigError("TSMESH_AUTH_KEK", "a key-encryption key is required in production (or TSMESH_AUTH_KEK_FILE)")
    return None
