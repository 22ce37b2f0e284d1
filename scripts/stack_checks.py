"""What the local stack checks and prepares before starting anything: ports, dependencies, the database."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

from stack_config import BOOTSTRAP_SQL, StackConfig, redact
from stack_procs import StackError, last_line, port_in_use


def pg_address(cfg: StackConfig) -> tuple[str, int]:
    """The PostgreSQL host and port of the admin URL."""
    pg = urlsplit(cfg.pg_admin_url)
    return pg.hostname or "127.0.0.1", pg.port or 5432


def check_ports(cfg: StackConfig) -> None:
    """Raise naming the first port already taken and the variable that moves it."""
    for port in cfg.ports():
        if port_in_use(port.number):
            raise StackError(
                f"port {port.number} ({port.what}) is already in use; set {port.variable} to another port"
                " (or stop the other stack)"
            )


def check_postgres(cfg: StackConfig) -> None:
    """Raise naming the address when PostgreSQL does not answer the admin URL."""
    import psycopg

    try:
        with psycopg.connect(cfg.pg_admin_url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        host, port = pg_address(cfg)
        reason = last_line(str(exc)) or type(exc).__name__
        raise StackError(
            f"PostgreSQL is not reachable at {host}:{port} (TSMESH_PG_ADMIN_URL={redact(cfg.pg_admin_url)}): {reason}"
        ) from None


def check_redis(cfg: StackConfig) -> None:
    """Raise naming the (redacted) URL when Redis does not answer a PING."""
    import redis

    client = redis.Redis.from_url(cfg.redis_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StackError(f"Redis is not reachable at {redact(cfg.redis_url)} (TSMESH_REDIS_URL): {exc}") from None
    finally:
        client.close()


def check_kafka(bootstrap: str) -> None:
    """Raise when no address of the bootstrap list accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                return
        except (OSError, ValueError):
            continue
    raise StackError(f"the Kafka broker is not reachable at {bootstrap} (TSMESH_KAFKA_BOOTSTRAP)")


def prepare_database(cfg: StackConfig, say: Callable[[str], None]) -> None:
    """Create the database if missing and apply the bootstrap SQL (roles, schemas), idempotently."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(cfg.pg_admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (cfg.database,)).fetchone()
        if exists is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(cfg.database)))
                say(f"created database {cfg.database}")
            except psycopg.errors.DuplicateDatabase:
                pass
    target = urlsplit(cfg.pg_admin_url)._replace(path=f"/{cfg.database}")
    script = BOOTSTRAP_SQL.read_text()
    for attempt in range(3):
        try:
            with psycopg.connect(urlunsplit(target), autocommit=True) as conn:
                conn.execute(script.encode())
            return
        except psycopg.errors.InternalError:  # "tuple concurrently updated": another bootstrap raced us
            if attempt == 2:
                raise
            time.sleep(0.2)
