"""Auth benchmark (`make bench-auth`): Introspect of a cached API token vs the bare gRPC echo,
local JWT verification in the shared Authenticator vs raw PyJWT, and Login at the configured bcrypt
cost vs raw bcrypt. Everything runs on 127.0.0.1 against a throwaway database that is dropped after.

    .venv/bin/python bench/bench_auth.py [--duration 6] [--concurrency 32]

Env: TSMESH_AUTH_BCRYPT_COST (default 12), TSMESH_TEST_PG_* / TSMESH_TEST_REDIS_URL as in the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import asyncpg
import bcrypt
import grpc
import jwt
import redis.asyncio as aioredis
import uvloop
from tsmesh.v1 import auth_pb2, auth_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import LatencyRecorder, Report, drive, echo_baseline
from throwaway import fresh_redis_namespace

from tsmesh_auth.app import build, create_app
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.db import create_pool
from tsmesh_auth.migrate import upgrade_async
from tsmesh_common.authn import Authenticator, AuthenticatorConfig, GrpcAuthSource

ROOT = Path(__file__).resolve().parent.parent
PG = f"{os.environ.get('TSMESH_TEST_PG_HOST', '127.0.0.1')}:{os.environ.get('TSMESH_TEST_PG_PORT', '5432')}"
SUPER = os.environ.get("TSMESH_TEST_PG_SUPERUSER", "postgres")
REDIS_URL = os.environ.get("TSMESH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PASSWORD = "benchmark-password-1234"


async def _create_db() -> str:
    name = f"tsmesh_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(f"postgresql://{SUPER}@{PG}/postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    conn = await asyncpg.connect(f"postgresql://{SUPER}@{PG}/{name}")
    try:
        await conn.execute((ROOT / "deploy" / "postgres" / "bootstrap.sql").read_text())
    finally:
        await conn.close()
    return name


async def _drop_db(name: str) -> None:
    conn = await asyncpg.connect(f"postgresql://{SUPER}@{PG}/postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _rate(fn, duration: float) -> float:  # type: ignore[no-untyped-def]
    count = 0
    started = time.perf_counter()
    deadline = started + duration
    while time.perf_counter() < deadline:
        for _ in range(100):
            await fn()
        count += 100
    return count / (time.perf_counter() - started)


async def main(duration: float, concurrency: int) -> None:
    cost = int(os.environ.get("TSMESH_AUTH_BCRYPT_COST", "12"))
    db = await _create_db()
    env = {
        "TSMESH_DATABASE_URL": f"postgresql://tsmesh_auth@{PG}/{db}",
        "TSMESH_REDIS_URL": REDIS_URL,
        "TSMESH_REDIS_NAMESPACE": fresh_redis_namespace("bench"),
        "TSMESH_AUTH_BCRYPT_COST": str(cost),
        "TSMESH_AUTH_KEK": base64.b64encode(os.urandom(32)).decode(),
        "TSMESH_AUTH_LOGIN_FREE_ATTEMPTS_ADDRESS": "1000000",
    }
    try:
        await upgrade_async(env["TSMESH_DATABASE_URL"])
        cfg = AuthConfig.from_env(env)
        pool = await create_pool(cfg.database_url, 10)
        redis = aioredis.Redis.from_url(REDIS_URL)
        parts = await build(cfg, pool, redis)
        app = create_app(parts, None)
        port = await app.start("127.0.0.1", 0)
        tenant = f"bench-{uuid.uuid4().hex[:8]}"
        await parts.directory.create_tenant(tenant)
        await parts.directory.create_user(tenant, "bench@example.com", PASSWORD, "admin")
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        login = auth_pb2.LoginRequest(tenant=tenant, email="bench@example.com", password=PASSWORD)
        access = (await stub.Login(login, timeout=30)).tokens.access_token
        created = await stub.CreateApiToken(
            auth_pb2.CreateApiTokenRequest(name="bench", scopes=["read"]),
            metadata=(("authorization", f"Bearer {access}"),),
        )
        request = auth_pb2.IntrospectRequest(token=created.secret)
        assert (await stub.Introspect(request)).active

        async def introspect() -> object:
            return await stub.Introspect(request, timeout=10)

        report = Report(f"auth ({os.cpu_count()} CPUs, bcrypt cost {cost}, concurrency {concurrency})")
        # Short interleaved rounds, so both sides see the same background load on a shared machine.
        rounds = 6
        echo_rates, introspect_rates, introspect_latency = [], [], LatencyRecorder()
        for _ in range(rounds):
            echo = await echo_baseline(duration / rounds * 2, concurrency)
            echo_rates.append(echo.calls_per_s)
            rate, latencies = await drive(introspect, duration / rounds * 2, concurrency)
            introspect_rates.append(rate)
            introspect_latency.extend(latencies)
        p99 = introspect_latency.summary()["p99"]
        report.add(
            "Introspect cached API token",
            statistics.median(introspect_rates),
            "calls/s",
            "bare grpc.aio echo",
            statistics.median(echo_rates),
            ">= 80% of echo",
        )
        report.add("Introspect p99", p99, "ms")

        source = GrpcAuthSource(channel)
        authenticator = Authenticator(
            AuthenticatorConfig(cfg.common.jwt_issuer, cfg.common.jwt_audience), source, source
        )
        await authenticator.authenticate(access)
        public = parts.keyring.signing_key().private_key.public_key()  # type: ignore[union-attr]

        async def raw_decode() -> None:
            jwt.decode(access, public, algorithms=["EdDSA"], audience="tsmesh", issuer="tsmesh-auth")

        verify_rate = await _rate(lambda: authenticator.authenticate(access), duration)
        distinct = [parts.sessions._issuer.issue("bench", "u", ["read"]).token for _ in range(2000)]
        fresh = Authenticator(AuthenticatorConfig(cfg.common.jwt_issuer, cfg.common.jwt_audience), source, source)
        await fresh.authenticate(access)
        started = time.perf_counter()
        for token in distinct:
            await fresh.authenticate(token)
        distinct_rate = len(distinct) / (time.perf_counter() - started)
        raw_rate = await _rate(raw_decode, duration)
        report.add(
            "JWT verification, token seen before (Authenticator)",
            verify_rate,
            "verif/s",
            "raw PyJWT decode",
            raw_rate,
            ">= 10,000/s",
        )
        report.add(
            "JWT verification, distinct tokens (signature check)",
            distinct_rate,
            "verif/s",
            "raw PyJWT decode",
            raw_rate,
        )

        async def do_login() -> object:
            return await stub.Login(login, timeout=30)

        login_rate, login_latency = await drive(do_login, duration, 4)
        stored = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(cost))

        async def raw_bcrypt() -> object:
            return await asyncio.to_thread(bcrypt.checkpw, PASSWORD.encode(), stored)

        bcrypt_rate, _ = await drive(raw_bcrypt, duration, 4)
        report.add(
            f"Login (bcrypt cost {cost})",
            login_rate,
            "logins/s",
            "raw bcrypt.checkpw x4 threads",
            bcrypt_rate,
            "bounded by bcrypt",
        )
        report.add("Login p99", login_latency.summary()["p99"], "ms")
        report.print()
        ratios = " ".join(f"{i / e:.2f}" for i, e in zip(introspect_rates, echo_rates, strict=True))
        print(f"Introspect/echo per interleaved round: {ratios}")
        print()
        print(report.markdown())
        await channel.close()
        await app.stop(1.0)
        await pool.close()
        await redis.aclose()
    finally:
        await _drop_db(db)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=32)
    args = parser.parse_args()
    uvloop.run(main(args.duration, args.concurrency))
