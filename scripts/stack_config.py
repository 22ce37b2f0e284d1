"""Where the local stack finds its dependencies and which ports, database and folder it uses."""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP_SQL = ROOT / "deploy" / "postgres" / "bootstrap.sql"
# ingest runs as two processes, as k8s/ deploys it: the API (TSMESH_INGEST_MODE=api) and the writer
# (=writer, its own event loop, so COPYs never stall acknowledgements or the live feed)
GRPC_SERVICES = ("auth", "ingest", "ingest_writer", "query")
SERVICES = (*GRPC_SERVICES, "gateway")
INGEST_MODES = {"ingest": "api", "ingest_writer": "writer"}


def module_of(svc: str) -> str:
    """The Python package that runs process ``svc`` (``ingest_writer`` is ``tsmesh_ingest``)."""
    return "tsmesh_ingest" if svc in INGEST_MODES else f"tsmesh_{svc}"


DEMO_TENANT = "demo"
DEMO_EMAIL = "admin@demo.local"


@dataclass(frozen=True)
class Port:
    """A port the stack binds, what binds it and the variable that moves it."""

    what: str
    variable: str
    number: int


@dataclass(frozen=True)
class StackConfig:
    """Where the stack finds its dependencies and which ports and database it uses."""

    pg_admin_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_namespace: str = "tsmesh"  # every Redis key and channel of the stack starts with it (ADR 0011)
    kafka_bootstrap: str | None = None
    kafka_port: int = 9092
    database: str = "tsmesh"
    auth_port: int = 50053
    auth_metrics_port: int = 9103
    ingest_port: int = 50051
    ingest_metrics_port: int = 9101
    ingest_writer_port: int = 50054
    ingest_writer_metrics_port: int = 9104
    query_port: int = 50052
    query_metrics_port: int = 9102
    http_port: int = 8080
    gateway_metrics_port: int = 9100
    state_dir: Path = ROOT / ".tsmesh"
    log_level: str = "INFO"
    startup_timeout_s: float = 90.0
    service_grace_s: float = 3.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StackConfig:
        """Read ``TSMESH_PG_ADMIN_URL``, ``TSMESH_REDIS_URL``, ``TSMESH_REDIS_NAMESPACE``,
        ``TSMESH_KAFKA_BOOTSTRAP``, the port variables."""
        from tsmesh_common.config import ConfigError, Env, redis_namespace

        env = Env(environ)
        d = cls()
        database = env.get_str("TSMESH_DEV_DATABASE", d.database)
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
            raise ConfigError("TSMESH_DEV_DATABASE", f"must be a lower-case SQL identifier, got {database!r}")
        return cls(
            pg_admin_url=env.get_str("TSMESH_PG_ADMIN_URL", d.pg_admin_url),
            redis_url=env.get_str("TSMESH_REDIS_URL", d.redis_url),
            redis_namespace=redis_namespace(env).name,
            kafka_bootstrap=env.raw("TSMESH_KAFKA_BOOTSTRAP"),
            kafka_port=env.get_port("TSMESH_DEV_KAFKA_PORT", d.kafka_port),
            database=database,
            auth_port=env.get_port("TSMESH_AUTH_GRPC_PORT", d.auth_port),
            auth_metrics_port=env.get_port("TSMESH_AUTH_METRICS_PORT", d.auth_metrics_port),
            ingest_port=env.get_port("TSMESH_INGEST_GRPC_PORT", d.ingest_port),
            ingest_metrics_port=env.get_port("TSMESH_INGEST_METRICS_PORT", d.ingest_metrics_port),
            ingest_writer_port=env.get_port("TSMESH_INGEST_WRITER_GRPC_PORT", d.ingest_writer_port),
            ingest_writer_metrics_port=env.get_port("TSMESH_INGEST_WRITER_METRICS_PORT", d.ingest_writer_metrics_port),
            query_port=env.get_port("TSMESH_QUERY_GRPC_PORT", d.query_port),
            query_metrics_port=env.get_port("TSMESH_QUERY_METRICS_PORT", d.query_metrics_port),
            http_port=env.get_port("TSMESH_HTTP_PORT", d.http_port),
            gateway_metrics_port=env.get_port("TSMESH_GATEWAY_METRICS_PORT", d.gateway_metrics_port),
            state_dir=Path(env.get_str("TSMESH_DEV_DIR", str(d.state_dir))),
            log_level=env.get_str("TSMESH_LOG_LEVEL", d.log_level),
        )

    def to_environ(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` (so ``make run``) rebuild this config."""
        env = {
            "TSMESH_PG_ADMIN_URL": self.pg_admin_url,
            "TSMESH_REDIS_URL": self.redis_url,
            "TSMESH_REDIS_NAMESPACE": self.redis_namespace,
            "TSMESH_DEV_KAFKA_PORT": str(self.kafka_port),
            "TSMESH_DEV_DATABASE": self.database,
            "TSMESH_HTTP_PORT": str(self.http_port),
            "TSMESH_GATEWAY_METRICS_PORT": str(self.gateway_metrics_port),
            "TSMESH_DEV_DIR": str(self.state_dir),
            "TSMESH_LOG_LEVEL": self.log_level,
        }
        for svc in GRPC_SERVICES:
            env[f"TSMESH_{svc.upper()}_GRPC_PORT"] = str(self.grpc_port(svc))
            env[f"TSMESH_{svc.upper()}_METRICS_PORT"] = str(self.metrics_port(svc))
        if self.kafka_bootstrap is not None:
            env["TSMESH_KAFKA_BOOTSTRAP"] = self.kafka_bootstrap
        return env

    def ports(self) -> list[Port]:
        """Every port the stack will bind, in the order they are checked."""
        ports = [
            Port("auth gRPC", "TSMESH_AUTH_GRPC_PORT", self.auth_port),
            Port("auth metrics", "TSMESH_AUTH_METRICS_PORT", self.auth_metrics_port),
            Port("ingest gRPC", "TSMESH_INGEST_GRPC_PORT", self.ingest_port),
            Port("ingest metrics", "TSMESH_INGEST_METRICS_PORT", self.ingest_metrics_port),
            Port("ingest writer gRPC (health)", "TSMESH_INGEST_WRITER_GRPC_PORT", self.ingest_writer_port),
            Port("ingest writer metrics", "TSMESH_INGEST_WRITER_METRICS_PORT", self.ingest_writer_metrics_port),
            Port("query gRPC", "TSMESH_QUERY_GRPC_PORT", self.query_port),
            Port("query metrics", "TSMESH_QUERY_METRICS_PORT", self.query_metrics_port),
            Port("gateway HTTP", "TSMESH_HTTP_PORT", self.http_port),
            Port("gateway metrics and docs", "TSMESH_GATEWAY_METRICS_PORT", self.gateway_metrics_port),
        ]
        if self.kafka_bootstrap is None:
            ports.append(Port("bundled Kafka broker", "TSMESH_DEV_KAFKA_PORT", self.kafka_port))
        return ports

    def grpc_port(self, svc: str) -> int:
        """The gRPC port of ``svc`` (one of :data:`GRPC_SERVICES`)."""
        return int(getattr(self, f"{svc}_port"))

    def metrics_port(self, svc: str) -> int:
        """The Prometheus metrics port of ``svc`` (one of :data:`GRPC_SERVICES`)."""
        return int(getattr(self, f"{svc}_metrics_port"))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (held together while picking, so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def throwaway_pg_admin_url() -> str:
    """The admin connection of private stacks: ``TSMESH_TEST_PG_ADMIN_URL`` or the local default."""
    return os.environ.get("TSMESH_TEST_PG_ADMIN_URL", StackConfig.pg_admin_url)


def private_config(state_dir: Path, **overrides: object) -> StackConfig:
    """A private stack for tests and benchmarks: free ports, a fresh ``tsmesh_e2e_<random>`` database
    (drop it with :func:`drop_database`), the Redis namespace of the same name and its own state
    folder, so it never touches ``make run``'s nor hears another stack on the same Redis.

    Dependencies: ``TSMESH_TEST_PG_ADMIN_URL`` and ``TSMESH_TEST_REDIS_URL``, else the local defaults."""
    ports = free_ports(11)
    database = f"tsmesh_e2e_{uuid.uuid4().hex[:10]}"
    values: dict[str, object] = {
        "pg_admin_url": throwaway_pg_admin_url(),
        "redis_url": os.environ.get("TSMESH_TEST_REDIS_URL", StackConfig.redis_url),
        "kafka_port": ports[0],
        "database": database,
        "redis_namespace": database,
        "auth_port": ports[1],
        "auth_metrics_port": ports[2],
        "ingest_port": ports[3],
        "ingest_metrics_port": ports[4],
        "query_port": ports[5],
        "query_metrics_port": ports[6],
        "http_port": ports[7],
        "ingest_writer_port": ports[8],
        "ingest_writer_metrics_port": ports[9],
        "gateway_metrics_port": ports[10],
        "state_dir": state_dir,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return StackConfig(**values)  # type: ignore[arg-type]


def drop_database(name: str, pg_admin_url: str | None = None) -> None:
    """Drop a private stack's database (``FORCE``: its services may still hold connections)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(pg_admin_url or throwaway_pg_admin_url(), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
