"""A rollout costs no write: SIGTERM one of two real ingest processes while clients write through the
shared channel (round robin, writes retried on UNAVAILABLE); every write succeeds and the stopped
process drains and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from testkit import REDIS_URL, eventually
from throwaway import free_port
from tsmesh.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc

from tsmesh_common.client import create_channel
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.topics import create_topics

HERE = Path(__file__).resolve().parent
WRITERS = 24


def _env(bootstrap: str, tenant_id: str) -> dict[str, str]:
    return {
        "TSMESH_INGEST_MODE": "api",
        "TSMESH_GRPC_HOST": "127.0.0.1",
        "TSMESH_REDIS_URL": REDIS_URL,
        "TSMESH_REDIS_NAMESPACE": f"rollout-{tenant_id}",  # the replicas' deployment, nobody else's
        "TSMESH_KAFKA_BOOTSTRAP": bootstrap,
        "TSMESH_KAFKA_TOPIC": f"tsmesh.points.rollout-{tenant_id}",
        "TSMESH_KAFKA_DLQ_TOPIC": f"tsmesh.points.dlq.rollout-{tenant_id}",
        "TSMESH_SHUTDOWN_GRACE_SECONDS": "10",
        "TSMESH_SHUTDOWN_DRAIN_SECONDS": "2",
    }


def _point(i: int, writer: int) -> common_pb2.Point:
    return common_pb2.Point(
        metric="rollout", labels={"writer": str(writer)}, timestamp_ns=time.time_ns(), value=float(i)
    )


async def _serving(port: int) -> bool:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tsmesh.v1.IngestService"), timeout=2
            )
        except grpc.aio.AioRpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


async def test_sigterm_under_load_fails_no_write(broker: Any, token_mint: Any, tenant_id: str) -> None:
    ports = [free_port(), free_port()]
    base = _env(broker.bootstrap, tenant_id)
    await create_topics(IngestConfig.from_env(base).kafka)
    jwk = json.dumps(token_mint.jwks.keys[0])
    pythonpath = os.pathsep.join(str(HERE.parents[1] / d) for d in ("tests", "bench"))
    procs = []
    for port in ports:
        env = {
            **os.environ,
            **base,
            "TSMESH_GRPC_PORT": str(port),
            "TSMESH_METRICS_PORT": str(free_port()),
            "TEST_JWK": jwk,
            "PYTHONPATH": pythonpath,
        }
        procs.append(await asyncio.create_subprocess_exec(sys.executable, str(HERE / "ingest_child.py"), env=env))
    channel = create_channel(",".join(f"127.0.0.1:{p}" for p in ports).join(("ipv4:", "")))
    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    metadata = (("authorization", f"Bearer {token_mint.token(tenant_id, 'write')}"),)
    ok = 0
    failed: list[str] = []
    done = asyncio.Event()

    async def writer(n: int) -> None:
        nonlocal ok
        i = 0
        while not done.is_set():
            i += 1
            batch = [_point(i, n) for _ in range(20)]
            try:
                await stub.WriteBatch(ingest_pb2.WriteRequest(points=batch), metadata=metadata, timeout=15)
                ok += 1
            except grpc.aio.AioRpcError as exc:
                failed.append(f"{exc.code().name}: {exc.details()}")

    try:
        for port in ports:
            await eventually(lambda port=port: _serving(port), timeout=60)
        tasks = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
        await eventually(lambda: ok >= 100, timeout=60)
        procs[0].send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(procs[0].wait(), 60)
        after = ok
        await eventually(lambda: ok >= after + 100, timeout=60)
        done.set()
        await asyncio.gather(*tasks)
    finally:
        done.set()
        await channel.close()
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
    assert code == 0
    assert failed == []
