"""`make run` end to end: a private stack comes up healthy, serves metrics, and stops without orphans."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import devstack
import grpc
import pytest
from devstack import GRPC_SERVICES, Stack, StackConfig, StackError, http_status
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from stack_supervise import Backoff

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

DEVSTACK = [sys.executable, str(ROOT / "scripts" / "devstack.py")]


def free_ports(count: int) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def config_environ(cfg: StackConfig) -> dict[str, str]:
    """A clean environment (no developer TSMESH_* settings) that makes devstack.py use ``cfg``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("TSMESH_")}, **cfg.to_environ()}


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def health_status(addr: str) -> int:
    with grpc.insecure_channel(addr) as channel:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=3)
        return int(answer.status)


def metric_families(url: str) -> list[str]:
    with urllib.request.urlopen(url, timeout=3) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return [family.name for family in text_string_to_metric_families(text)]


def test_private_stack_is_healthy_serves_metrics_and_stops_within_10s(
    stack_config: Callable[..., StackConfig],
) -> None:
    cfg = stack_config()
    stack = Stack(cfg, out=open(os.devnull, "w"))  # noqa: SIM115 - closed below
    try:
        stack.start()
        started = set(stack.children)
        assert {"auth", "ingest", "ingest_writer", "query", "gateway", "broker"} <= started
        for svc in GRPC_SERVICES:
            assert health_status(stack.grpc_addr(svc)) == health_pb2.HealthCheckResponse.SERVING, svc
            names = metric_families(stack.metrics_url(svc))
            assert any(name.startswith("process_") or name.startswith("python_") for name in names), svc
        ready = http_status(stack.gateway_url + "/readyz")
        assert ready == 200 or (ready == 404 and http_status(stack.gateway_url + "/healthz") == 200)
        assert metric_families(stack.metrics_url("gateway"))
        env_text = stack.env_file.read_text()
        assert stat.S_IMODE(stack.env_file.stat().st_mode) == 0o600
        assert f"TSMESH_QUERY_ADDR={stack.grpc_addr('query')}" in env_text
        assert stack.token is not None and stack.token.startswith("tsm_")
        assert f"TSMESH_TOKEN={stack.token}" in env_text
        pids = {p.pid for p in stack.children.values()}
        pids |= {d for pid in pids for d in descendants(pid)}
    finally:
        began = time.monotonic()
        stack.stop()
        took = time.monotonic() - began
        stack._out.close()
    assert took < 10.0, f"stop took {took:.1f}s"
    assert stack.children == {}
    assert [pid for pid in pids if alive(pid)] == []
    for port in (cfg.auth_port, cfg.ingest_port, cfg.ingest_writer_port, cfg.query_port, cfg.kafka_port, cfg.http_port):
        assert not listening(port)


def test_make_run_exits_0_on_sigint_and_a_second_run_fails_fast_on_the_port(
    stack_config: Callable[..., StackConfig],
) -> None:
    cfg = stack_config()
    env = config_environ(cfg)
    proc = subprocess.Popen(DEVSTACK, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if "tsmesh is up" in line:
                break
        assert any("tsmesh is up" in line for line in lines), "".join(lines) + proc.stderr.read()  # type: ignore[union-attr]
        tree = descendants(proc.pid)
        assert len(tree) >= 4
        assert stat.S_IMODE((cfg.state_dir / "dev.env").stat().st_mode) == 0o600

        second = subprocess.run(DEVSTACK, env=env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        message = second.stderr.strip()
        assert message.startswith("make run: port ") and "already in use" in message
        assert "TSMESH_" in message and "_PORT" in message
        assert health_status(f"127.0.0.1:{cfg.query_port}") == health_pb2.HealthCheckResponse.SERVING

        began = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(15)
        took = time.monotonic() - began
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert rc == 0
    assert took < 10.0, f"stop took {took:.1f}s"
    assert [pid for pid in tree if alive(pid)] == []


def test_taken_port_names_the_port_and_its_variable(stack_config: Callable[..., StackConfig]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        cfg = stack_config(query_metrics_port=taken)
        result = subprocess.run(DEVSTACK, env=config_environ(cfg), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"make run: port {taken} (query metrics) is already in use; set TSMESH_QUERY_METRICS_PORT to another port"
        " (or stop the other stack)"
    )
    assert not (cfg.state_dir / "logs").exists()


@pytest.mark.parametrize("dependency", ["PostgreSQL", "Redis"])
def test_unreachable_dependency_is_named_with_its_address_and_nothing_runs(
    stack_config: Callable[..., StackConfig], dependency: str
) -> None:
    (dead,) = free_ports(1)
    if dependency == "PostgreSQL":
        cfg = stack_config(pg_admin_url=f"postgresql://postgres@127.0.0.1:{dead}/postgres")
        expected = f"make run: PostgreSQL is not reachable at 127.0.0.1:{dead} (TSMESH_PG_ADMIN_URL="
    else:
        cfg = stack_config(redis_url=f"redis://127.0.0.1:{dead}/0")
        expected = f"make run: Redis is not reachable at redis://127.0.0.1:{dead}/0 (TSMESH_REDIS_URL)"
    proc = subprocess.Popen(
        DEVSTACK, env=config_environ(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.startswith(expected), err
    assert len(err.strip().splitlines()) == 1
    assert "tsmesh is up" not in out
    assert not listening(cfg.kafka_port)
    assert not (cfg.state_dir / "logs").exists()


def test_stack_start_failure_raises_and_leaves_nothing(stack_config: Callable[..., StackConfig]) -> None:
    (dead,) = free_ports(1)
    stack = Stack(stack_config(redis_url=f"redis://127.0.0.1:{dead}/0"), out=sys.stderr)
    with pytest.raises(StackError, match="Redis is not reachable"):
        stack.start()
    assert stack.children == {}


def test_failing_setup_step_stops_the_stack_with_one_line_naming_the_command(
    stack_config: Callable[..., StackConfig],
) -> None:
    stack = Stack(stack_config(log_level="NOT_A_LEVEL"), out=sys.stderr)
    with pytest.raises(StackError) as raised:
        stack.start()
    message = str(raised.value)
    assert message.startswith("`python -m tsmesh_auth migrate` failed (exit "), message
    assert "TSMESH_LOG_LEVEL" in message
    assert len(message.splitlines()) == 1
    assert stack.children == {}


def _write_point(stack: Stack, metric: str, value: float) -> None:
    body = json.dumps({"points": [{"metric": metric, "timestamp_ns": time.time_ns(), "value": value}]}).encode()
    request = urllib.request.Request(
        stack.gateway_url + "/v1/write",
        data=body,
        headers={"Authorization": f"Bearer {stack.token}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert json.loads(response.read())["accepted"] == 1


def _stored_values(stack: Stack, metric: str) -> list[float]:
    args = ["psql", "-h", stack.pg_host, "-p", str(stack.pg_port), "-U", "postgres", "-d", stack.cfg.database, "-Atc"]
    sql = f"SELECT p.value FROM ts.points p JOIN ts.series s USING (series_id) WHERE s.metric = '{metric}'"
    out = subprocess.run([*args, sql], check=True, capture_output=True, text=True).stdout
    return sorted(float(v) for v in out.split())


def test_a_killed_writer_is_restarted_and_every_acknowledged_point_is_stored(
    stack_config: Callable[..., StackConfig],
) -> None:
    cfg = stack_config()
    out = io.StringIO()
    stack = Stack(cfg, out=out)
    try:
        stack.start()
        _write_point(stack, "restart_e2e", 1.0)
        killed = stack.children["ingest_writer"].pid
        os.kill(killed, signal.SIGKILL)
        _write_point(stack, "restart_e2e", 2.0)  # acknowledged by the broker while no writer runs
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            devstack.supervise(stack, Backoff(), until=lambda: stack.children["ingest_writer"].pid != killed)
        assert "ingest_writer exited with code -9" in err.getvalue()
        assert str(stack.log_path("ingest_writer")) in err.getvalue()
        deadline = time.monotonic() + 60
        while _stored_values(stack, "restart_e2e") != [1.0, 2.0] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _stored_values(stack, "restart_e2e") == [1.0, 2.0]
    finally:
        stack.stop()


def test_stop_drains_the_bundled_broker_into_the_writer_before_stopping_it(
    stack_config: Callable[..., StackConfig],
) -> None:
    cfg = stack_config()
    out = io.StringIO()
    stack = Stack(cfg, out=out)
    try:
        stack.start()
        writer = stack.children["ingest_writer"].pid
        os.killpg(writer, signal.SIGSTOP)  # the writer falls behind: the broker holds unconsumed records
        try:
            _write_point(stack, "drain_e2e", 7.0)
        finally:
            resume = threading.Timer(2.0, os.killpg, (writer, signal.SIGCONT))
            resume.start()
        stack.stop()
        resume.join()
    finally:
        stack.stop()
    assert "waiting for the writer to store" in out.getvalue()
    assert _stored_values(stack, "drain_e2e") == [7.0]


async def test_unconsumed_answers_from_inside_a_running_event_loop(broker: Any) -> None:
    """``Stack.stop`` is synchronous but async tests and benchmarks call it from a running loop;
    the drain check must still count the unconsumed records there (it answered -1, "unknown")."""
    from aiokafka import AIOKafkaProducer
    from stack_supervise import unconsumed

    topic = f"unconsumed-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        for i in range(3):
            await producer.send_and_wait(topic, f"record {i}".encode())
    finally:
        await producer.stop()
    assert unconsumed(broker.bootstrap, topic, "nobody-consumed-this") == 3
    assert unconsumed("127.0.0.1:1", topic, "nobody", timeout_s=0.5) == -1
