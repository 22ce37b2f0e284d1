"""Typed, frozen configuration read from the environment and validated at start.

Each component owns a frozen dataclass with a ``from_env(environ)`` constructor that reads its
variables through :class:`Env`. A bad or missing value raises :class:`ConfigError` naming the
variable; :func:`load_or_exit` turns that into a one-line message and exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn, TypeVar

from tsmesh_common.grpc_tuning import LB_POLICIES, GrpcTuning
from tsmesh_common.redis_keys import DEFAULT_NAMESPACE, RedisNamespace
from tsmesh_common.service_credential import MIN_SECRET_CHARS, ServiceCredential

T = TypeVar("T")

EXIT_CONFIG = 2


class ConfigError(Exception):
    """A configuration variable is missing or invalid."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


class Env:
    """Reads typed values from an environment mapping; every error names the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        mode = environ.get("TSMESH_ENV", "dev").strip().lower()
        if mode not in ("dev", "production"):
            raise ConfigError("TSMESH_ENV", f"must be 'dev' or 'production', got {mode!r}")
        self.production = mode == "production"

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        return value.strip() if value is not None and value.strip() != "" else None

    def get_str(self, name: str, default: str, *, insecure_default: bool = False) -> str:
        """A string; in production a default marked insecure must be overridden."""
        value = self.raw(name)
        if value is None:
            if insecure_default and self.production:
                raise ConfigError(name, "must be set explicitly in production (the default is for local use only)")
            return default
        return value

    def required(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(name, "is required")
        return value

    def get_int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            result = default
        else:
            try:
                result = int(value, 10)
            except ValueError:
                raise ConfigError(name, f"must be an integer, got {value!r}") from None
        if minimum is not None and result < minimum:
            raise ConfigError(name, f"must be >= {minimum}, got {result}")
        if maximum is not None and result > maximum:
            raise ConfigError(name, f"must be <= {maximum}, got {result}")
        return result

    def get_float(self, name: str, default: float, *, minimum: float | None = None) -> float:
        value = self.raw(name)
        if value is None:
            result = default
        else:
            try:
                result = float(value)
            except ValueError:
                raise ConfigError(name, f"must be a number, got {value!r}") from None
        if result != result or result in (float("inf"), float("-inf")):
            raise ConfigError(name, "must be a finite number")
        if minimum is not None and result < minimum:
            raise ConfigError(name, f"must be >= {minimum}, got {result}")
        return result

    def get_bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ConfigError(name, f"must be true or false, got {value!r}")

    def get_port(self, name: str, default: int) -> int:
        return self.get_int(name, default, minimum=0, maximum=65535)

    def get_list(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class CommonConfig:
    """Settings every service shares: mode, logging, tracing, Redis (and its namespace) and how to reach auth."""

    service: str
    production: bool
    log_level: str
    grpc_host: str
    grpc_port: int
    metrics_port: int
    grace_seconds: float
    drain_seconds: float
    redis_url: str
    auth_addr: str
    jwt_issuer: str
    jwt_audience: str
    otlp_endpoint: str | None
    grpc: GrpcTuning = field(default_factory=GrpcTuning)
    redis_namespace: RedisNamespace = field(default_factory=RedisNamespace)
    jwt_max_lifetime_seconds: int = 86_400
    service_credential: ServiceCredential | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str], *, service: str, grpc_port: int, metrics_port: int) -> CommonConfig:
        env = Env(environ)
        level = env.get_str("TSMESH_LOG_LEVEL", "INFO").upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError("TSMESH_LOG_LEVEL", f"must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return cls(
            service=service,
            production=env.production,
            log_level=level,
            grpc_host=env.get_str("TSMESH_GRPC_HOST", "127.0.0.1"),
            grpc_port=env.get_port("TSMESH_GRPC_PORT", grpc_port),
            metrics_port=env.get_port("TSMESH_METRICS_PORT", metrics_port),
            grace_seconds=env.get_float("TSMESH_SHUTDOWN_GRACE_SECONDS", 5.0, minimum=0.0),
            drain_seconds=env.get_float("TSMESH_SHUTDOWN_DRAIN_SECONDS", 0.0, minimum=0.0),
            redis_url=env.get_str("TSMESH_REDIS_URL", "redis://127.0.0.1:6379/0", insecure_default=True),
            auth_addr=env.get_str("TSMESH_AUTH_ADDR", "127.0.0.1:50053"),
            jwt_issuer=env.get_str("TSMESH_JWT_ISSUER", "tsmesh-auth"),
            jwt_audience=env.get_str("TSMESH_JWT_AUDIENCE", "tsmesh"),
            otlp_endpoint=env.raw("OTEL_EXPORTER_OTLP_ENDPOINT"),
            grpc=_grpc_tuning(env),
            redis_namespace=redis_namespace(env),
            jwt_max_lifetime_seconds=env.get_int(
                "TSMESH_JWT_MAX_LIFETIME_SECONDS", 86_400, minimum=60, maximum=366 * 86_400
            ),
            service_credential=_service_credential(env, service),
        )


def redis_namespace(env: Env) -> RedisNamespace:
    """``TSMESH_REDIS_NAMESPACE``: what every Redis key and channel of the deployment starts with."""
    name = env.get_str("TSMESH_REDIS_NAMESPACE", DEFAULT_NAMESPACE)
    try:
        return RedisNamespace(name)
    except ValueError as exc:
        raise ConfigError("TSMESH_REDIS_NAMESPACE", str(exc)) from None


def _service_credential(env: Env, service: str) -> ServiceCredential | None:
    """This service's credential towards auth: ``TSMESH_SERVICE_SECRET`` or ``TSMESH_SERVICE_SECRET_FILE``."""
    inline = env.raw("TSMESH_SERVICE_SECRET")
    path = env.raw("TSMESH_SERVICE_SECRET_FILE")
    if inline is not None and path is not None:
        raise ConfigError("TSMESH_SERVICE_SECRET_FILE", "set either TSMESH_SERVICE_SECRET or its _FILE, not both")
    variable, secret = "TSMESH_SERVICE_SECRET", inline
    if path is not None:
        variable = "TSMESH_SERVICE_SECRET_FILE"
        try:
            with open(path, encoding="utf-8") as file:
                secret = file.read().strip()
        except OSError as exc:
            raise ConfigError(variable, f"cannot read the file ({exc.strerror})") from None
    if secret is None:
        return None
    if len(secret) < MIN_SECRET_CHARS or not secret.isascii() or not secret.isprintable():
        raise ConfigError(variable, f"must be at least {MIN_SECRET_CHARS} printable ASCII characters")
    return ServiceCredential(service, secret)


def _grpc_tuning(env: Env) -> GrpcTuning:
    policy = env.get_str("TSMESH_GRPC_LB_POLICY", "round_robin").lower()
    if policy not in LB_POLICIES:
        raise ConfigError("TSMESH_GRPC_LB_POLICY", f"must be one of {', '.join(LB_POLICIES)}, got {policy!r}")
    default = GrpcTuning()
    return GrpcTuning(
        lb_policy=policy,
        write_attempts=env.get_int("TSMESH_GRPC_WRITE_ATTEMPTS", default.write_attempts, minimum=1, maximum=5),
        max_connection_age_seconds=env.get_float(
            "TSMESH_GRPC_MAX_CONNECTION_AGE_SECONDS", default.max_connection_age_seconds, minimum=0.0
        ),
        max_connection_age_grace_seconds=env.get_float(
            "TSMESH_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS", default.max_connection_age_grace_seconds, minimum=0.0
        ),
    )


def load_or_exit(factory: Callable[[Mapping[str, str]], T], environ: Mapping[str, str]) -> T:
    """Build a config, or stop the process with one line naming the bad variable (exit 2)."""
    try:
        return factory(environ)
    except ConfigError as exc:
        _exit_config(str(exc))


def _exit_config(message: str) -> NoReturn:
    print(f"configuration error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG)
