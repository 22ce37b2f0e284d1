"""The admin command line exactly as `make run` uses it, and `python -m tsmesh_auth` serving."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tsmesh.v1 import auth_pb2, auth_pb2_grpc


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(migrated, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TSMESH_")}
    env.update({"TSMESH_DATABASE_URL": migrated.dsn("tsmesh_auth"), "TSMESH_AUTH_BCRYPT_COST": "4", **extra})
    return env


async def _cli(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tsmesh_auth", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_admin_cli_flow_used_by_make_run(migrated) -> None:
    env = _env(migrated)
    assert (await _cli(env, "migrate")).returncode == 0  # idempotent on a migrated database
    first = await _cli(env, "admin", "create-tenant", "demo", "--if-not-exists")
    again = await _cli(env, "admin", "create-tenant", "demo", "--if-not-exists")
    assert first.returncode == 0 and re.fullmatch(r"[0-9a-f]{16}\n", first.stdout) and again.stdout == first.stdout
    duplicate = await _cli(env, "admin", "create-tenant", "demo")
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr

    password = secrets.token_urlsafe(18)  # a fresh test password, never a literal
    user = await _cli(
        env,
        "admin",
        "create-user",
        "--tenant",
        "demo",
        "--email",
        "Ops@Example.com",
        "--role",
        "admin",
        stdin=password + "\n",
    )
    assert user.returncode == 0, user.stderr
    assert password not in user.stdout + user.stderr
    weak = await _cli(
        env, "admin", "create-user", "--tenant", "demo", "--email", "x@example.com", "--role", "reader", stdin="short\n"
    )
    assert weak.returncode == 1 and "password" in weak.stderr

    token = await _cli(env, "admin", "create-token", "--tenant", "demo", "--name", "dev", "--scopes", "read,write")
    assert token.returncode == 0, token.stderr
    assert re.fullmatch(r"tsm_[0-9a-f]{16}_[A-Za-z0-9_\-]{43}\n", token.stdout) and token.stderr == ""
    token_id = token.stdout.split("_")[1]
    listed = await _cli(env, "admin", "list-tokens", "--tenant", "demo")
    assert listed.stdout.startswith(f"{token_id}\tdev\tread,write\t") and "active" in listed.stdout
    assert token.stdout.strip() not in listed.stdout
    revoked = await _cli(env, "admin", "revoke-token", "--tenant", "demo", token_id)
    assert revoked.returncode == 0
    assert "revoked" in (await _cli(env, "admin", "list-tokens", "--tenant", "demo")).stdout

    kid = await _cli(env, "admin", "rotate-key", "--lead-seconds", "0")
    assert kid.returncode == 0 and kid.stdout.strip()
    verified = await _cli(env, "admin", "verify-audit")
    assert verified.returncode == 0 and "ok" in verified.stdout


async def test_cli_refuses_unknown_tenant_and_bad_scopes(migrated) -> None:
    env = _env(migrated)
    missing = await _cli(env, "admin", "create-token", "--tenant", "nope", "--name", "n", "--scopes", "read")
    assert missing.returncode == 1 and "no such tenant" in missing.stderr
    await _cli(env, "admin", "create-tenant", "acme")
    bad = await _cli(env, "admin", "create-token", "--tenant", "acme", "--name", "n", "--scopes", "read,root")
    assert bad.returncode == 1 and "scopes" in bad.stderr


async def test_production_without_kek_exits_2_naming_the_variable(migrated) -> None:
    env = _env(migrated, TSMESH_ENV="production", TSMESH_REDIS_URL="redis://127.0.0.1:6379/0")
    result = await _cli(env)
    assert result.returncode == 2 and "TSMESH_AUTH_KEK" in result.stderr


async def test_python_m_tsmesh_auth_serves_and_stops_gracefully(migrated) -> None:
    port, metrics = _free_port(), _free_port()
    env = _env(migrated, TSMESH_GRPC_PORT=str(port), TSMESH_METRICS_PORT=str(metrics))
    proc = subprocess.Popen(  # noqa: ASYNC220 - a child process for the whole test
        [sys.executable, "-m", "tsmesh_auth"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        while True:
            try:
                health = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service="tsmesh.v1.AuthService"), timeout=1
                )
                break
            except grpc.aio.AioRpcError:
                assert proc.poll() is None and time.monotonic() < deadline
                await asyncio.sleep(0.2)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        jwks = await auth_pb2_grpc.AuthServiceStub(channel).GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
        assert jwks.keys and jwks.keys[0].alg == "EdDSA"
        await channel.close()
        proc.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=30)
        assert proc.returncode == 0
        assert "generated a development key-encryption key" in stderr or "development key-encryption" in stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_service_credentials_are_written_once_and_read_by_auth(tmp_path) -> None:
    """Compose's set-up job: a secret per service, kept on later runs, accepted by AuthConfig."""
    import subprocess
    import sys

    from tsmesh_auth.config import AuthConfig

    command = [sys.executable, "-m", "tsmesh_auth", "service-credentials", str(tmp_path), "gateway", "query"]
    subprocess.run(command, check=True, capture_output=True)
    first = (tmp_path / "gateway").read_text()
    subprocess.run(command, check=True, capture_output=True)
    assert (tmp_path / "gateway").read_text() == first and len(first) >= 32
    cfg = AuthConfig.from_env({"TSMESH_AUTH_SERVICE_SECRETS_DIR": str(tmp_path)})
    assert sorted(cfg.service_secrets) == ["gateway", "query"]
    bad = subprocess.run([*command[:-2], "Not A Name"], capture_output=True)
    assert bad.returncode == 2
