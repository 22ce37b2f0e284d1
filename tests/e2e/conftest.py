"""End-to-end fixtures: a private stack (``scripts/devstack.py``) on free ports with a throwaway database.

The private stack never touches a developer's ``make run`` (ports 8080/5005x/910x, database
``tsmesh``, ``.tsmesh/``): every port is free-picked, the database is ``tsmesh_e2e_<random>`` and
is dropped afterwards, and the state folder lives in the test's temporary directory.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from devstack import StackConfig  # noqa: E402

PG_ADMIN_URL = os.environ.get("TSMESH_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("TSMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def _free_ports(count: int) -> list[int]:
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


def private_config(state_dir: Path, **overrides: object) -> StackConfig:
    """A stack config on free ports, a fresh database name and its own state folder."""
    ports = _free_ports(8)
    values: dict[str, object] = {
        "pg_admin_url": PG_ADMIN_URL,
        "redis_url": REDIS_URL,
        "kafka_port": ports[0],
        "database": f"tsmesh_e2e_{uuid.uuid4().hex[:10]}",
        "auth_port": ports[1],
        "auth_metrics_port": ports[2],
        "ingest_port": ports[3],
        "ingest_metrics_port": ports[4],
        "query_port": ports[5],
        "query_metrics_port": ports[6],
        "http_port": ports[7],
        "state_dir": state_dir,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return StackConfig(**values)  # type: ignore[arg-type]


def drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def stack_config(tmp_path: Path) -> Iterator[Callable[..., StackConfig]]:
    """Factory of private stack configs; every database it named is dropped afterwards."""
    made: list[StackConfig] = []

    def make(**overrides: object) -> StackConfig:
        cfg = private_config(tmp_path / f"stack{len(made)}", **overrides)
        made.append(cfg)
        return cfg

    yield make
    for cfg in made:
        drop_database(cfg.database)
