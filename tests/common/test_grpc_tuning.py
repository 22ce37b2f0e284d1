"""Client load balancing and write retries of the shared channel, server connection age."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from throwaway import free_port
from tsmesh.v1 import ingest_pb2, ingest_pb2_grpc

from tsmesh_common.client import create_channel
from tsmesh_common.config import CommonConfig, ConfigError
from tsmesh_common.grpc_tuning import GrpcTuning
from tsmesh_common.server import GrpcApp


class _Counting(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, name: str, calls: Counter[str]) -> None:
        self.name = name
        self.calls = calls

    async def WriteBatch(self, request: ingest_pb2.WriteRequest, context: object) -> ingest_pb2.WriteResponse:
        self.calls[self.name] += 1
        return ingest_pb2.WriteResponse(accepted=len(request.points))


async def test_calls_spread_over_every_resolved_server() -> None:
    """Two servers behind one target (as a headless Service resolves to each pod): both get calls."""
    port = free_port()
    calls: Counter[str] = Counter()
    apps = []
    for host in ("127.0.0.1", "127.0.0.2"):
        app = GrpcApp(authenticator=None)
        servicer = _Counting(host, calls)
        app.add_service(
            "tsmesh.v1.IngestService", lambda s, v=servicer: ingest_pb2_grpc.add_IngestServiceServicer_to_server(v, s)
        )
        await app.start(host, port)
        apps.append(app)
    channel = create_channel(f"ipv4:127.0.0.1:{port},127.0.0.2:{port}")
    try:
        stub = ingest_pb2_grpc.IngestServiceStub(channel)
        for _ in range(40):
            await stub.WriteBatch(ingest_pb2.WriteRequest(), timeout=5)
    finally:
        await channel.close()
        for app in apps:
            await app.stop(0.1)
    assert sum(calls.values()) == 40
    assert calls["127.0.0.1"] >= 10 and calls["127.0.0.2"] >= 10, calls


def test_service_config_balances_and_retries_only_writes_on_unavailable() -> None:
    config = json.loads(GrpcTuning().service_config())
    assert config["loadBalancingConfig"] == [{"round_robin": {}}]
    (method,) = config["methodConfig"]
    assert {(n["service"], n["method"]) for n in method["name"]} == {
        ("tsmesh.v1.IngestService", "WriteBatch"),
        ("tsmesh.v1.IngestService", "Write"),
    }
    assert method["retryPolicy"]["retryableStatusCodes"] == ["UNAVAILABLE"]
    assert ("grpc.enable_retries", 1) in GrpcTuning().channel_options()
    assert "methodConfig" not in json.loads(GrpcTuning(write_attempts=1).service_config())


def test_tuning_is_read_from_the_environment() -> None:
    cfg = CommonConfig.from_env(
        {
            "TSMESH_GRPC_LB_POLICY": "pick_first",
            "TSMESH_GRPC_WRITE_ATTEMPTS": "3",
            "TSMESH_GRPC_MAX_CONNECTION_AGE_SECONDS": "60",
            "TSMESH_GRPC_MAX_CONNECTION_AGE_GRACE_SECONDS": "30",
        },
        service="test",
        grpc_port=0,
        metrics_port=0,
    )
    assert cfg.grpc == GrpcTuning("pick_first", 3, 60.0, 30.0)
    assert cfg.grpc.server_options() == (
        ("grpc.max_connection_age_ms", 60_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
    )
    assert GrpcTuning(max_connection_age_seconds=0).server_options() == ()
    with pytest.raises(ConfigError, match="TSMESH_GRPC_LB_POLICY"):
        CommonConfig.from_env({"TSMESH_GRPC_LB_POLICY": "random"}, service="t", grpc_port=0, metrics_port=0)
