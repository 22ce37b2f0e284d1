"""Ingest readiness: the IngestService health stays NOT_SERVING until the Kafka producer connects,
even though the server starts (in production order: runtime first, then the server) before the broker."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
import throwaway
from grpc_health.v1 import health_pb2, health_pb2_grpc
from ingest_harness import ingest_env
from testkit import eventually

from tsmesh_common.bootstrap import Mesh
from tsmesh_common.server import create_server
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.service import SERVICE_NAME
from tsmesh_ingest.wiring import IngestClients, build


async def test_ingest_is_not_serving_until_the_producer_connects(
    token_mint: Any, redis_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = throwaway.free_port()
    environ = ingest_env("postgresql://nobody@127.0.0.1:1/none", f"127.0.0.1:{port}", TSMESH_INGEST_MODE="api")
    cfg = IngestConfig.from_env(environ)
    runtime = await build(cfg, IngestClients(redis_client, Mesh(token_mint.authenticator())))
    await runtime.start()
    grpc_port = await create_server(runtime.app, cfg.common)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    broker = None
    try:
        health = health_pb2_grpc.HealthStub(channel)

        async def status(name: str) -> int:
            answer = await health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            return int(answer.status)

        assert await status("") == health_pb2.HealthCheckResponse.SERVING
        assert await status(SERVICE_NAME) == health_pb2.HealthCheckResponse.NOT_SERVING

        monkeypatch.setattr(throwaway, "free_port", lambda: port)
        broker = throwaway.TansuBroker()

        async def serving() -> bool:
            return await status(SERVICE_NAME) == health_pb2.HealthCheckResponse.SERVING

        await eventually(serving, timeout=60)
        assert runtime.ready
    finally:
        await channel.close()
        await runtime.app.stop(0.2)
        if broker is not None:
            broker.stop()
