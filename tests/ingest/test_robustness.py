"""Review fixes: generation bumps before offsets, retention-safe acceptance, partitions dropped under
the writer, per-point dead letters, audit reporting, background tasks that never end on their own."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import ingest_harness
import pytest
import redis.asyncio as aioredis
from ingest_harness import point
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from test_writer import batch, read_dlq, settled
from testkit import eventually
from throwaway import free_port
from tsmesh.v1 import auth_pb2, auth_pb2_grpc, common_pb2

from tsmesh_common.audit import AuditReporter
from tsmesh_common.config import CommonConfig
from tsmesh_common.server import GrpcApp, create_server
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.partitions import DAY_NS, partition_name
from tsmesh_ingest.series_id import SeriesIdCache, series_id, to_signed
from tsmesh_ingest.validation import Validator

pytestmark = pytest.mark.integration

ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest


async def test_offsets_wait_for_the_generation_bump_while_redis_is_down(
    ts_db: Any, start_ingest: Any, tenant_id: str, redis_client: Any
) -> None:
    ingest = await start_ingest(ts_db)
    writer = ingest.runtime.writer
    assert writer is not None
    # No client-side retries: every bump attempt fails at once, so only the writer's policy decides.
    dead = aioredis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    writer._redis = dead
    try:
        await ingest.write(tenant_id, [point("bump", time.time_ns(), 1.0)])

        async def stored() -> bool:
            return len(await ingest.fetch("SELECT 1 FROM ts.points")) == 1

        await eventually(stored)
        await asyncio.sleep(1.5)  # the old writer gave up after ~0.3 s and committed anyway
        consumer = writer._consumer
        assert writer.committed_batches == 0
        assert not any([await consumer.committed(t) for t in consumer.assignment()])
        assert await redis_client.get(ingest.cfg.common.redis_namespace.data_generation_key(tenant_id)) is None
    finally:
        writer._redis = redis_client
        await dead.aclose()
    await eventually(lambda: writer.committed_batches == 1)
    assert int(await redis_client.get(ingest.cfg.common.redis_namespace.data_generation_key(tenant_id))) > 0
    committed = [await consumer.committed(t) for t in consumer.assignment()]
    assert sum(c or 0 for c in committed) == 1, committed


def test_points_are_accepted_only_back_to_the_oldest_whole_day_retention_keeps() -> None:
    now = 20_000 * 86_400 + 3_600.0  # 01:00 UTC on day 20000
    limits = ValidationLimits(max_past_seconds=2 * 86_400, retained_days=2)
    validator = Validator(limits, SeriesIdCache(), clock=lambda: now)
    oldest = 19_999 * DAY_NS  # start of yesterday: kept by retention for more than another day
    result = validator.validate("t", [point("m", oldest, 1.0), point("m", oldest - 1, 2.0)])
    assert [p.timestamp_ns for p in result.points] == [oldest]
    assert [e.field for e in result.errors] == ["timestamp_ns"]
    cfg = IngestConfig.from_env({"TSMESH_RETENTION_RAW_DAYS": "7"})
    assert cfg.validation.retained_days == 7


async def test_a_partition_dropped_under_the_writer_is_re_created_not_dead_lettered(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db)
    now = time.time_ns()
    await ingest.write(tenant_id, [point("dropped", now, 1.0)])
    await settled(ingest, 1)
    # Another replica's retention drops the day this writer has cached as existing.
    await ingest.fetch(f"DROP TABLE ts.{partition_name(now // DAY_NS)}")
    await ingest.write(tenant_id, [point("dropped", now + 1, 2.0), point("dropped", now + 2, 3.0)])
    await settled(ingest, 2)
    rows = await ingest.fetch("SELECT value FROM ts.points ORDER BY ts")
    assert [r["value"] for r in rows] == [2.0, 3.0]


async def test_only_the_points_the_database_refuses_are_dead_lettered(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db)
    now = time.time_ns()
    points = [point("clash", now, 1.0, k="a"), point("clash", now, 2.0, k="b"), point("clash", now, 3.0, k="c")]
    stolen = to_signed(series_id(tenant_id, "clash", {"k": "b"}.items()))
    await ingest.fetch(
        "INSERT INTO ts.series (series_id, tenant_id, metric, labels) VALUES ($1, 'someone-else', 'x', '{}')", stolen
    )
    await ingest.produce_raw(batch(tenant_id, points))

    async def good() -> list[Any]:
        rows = await ingest.fetch("SELECT value FROM ts.points ORDER BY value")
        return rows if len(rows) == 2 else []

    assert [r["value"] for r in await eventually(good)] == [1.0, 3.0]
    (dead,) = await read_dlq(ingest, 1)
    refused = common_pb2.PointBatch.FromString(dead.value)
    assert refused.tenant_id == tenant_id
    assert [(p.labels["k"], p.value) for p in refused.points] == [("b", 2.0)]
    assert "belongs to another tenant" in dict(dead.headers)["reason"].decode()


class _Audit(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self) -> None:
        self.received: list[auth_pb2.ReportAuditEventRequest] = []

    async def ReportAuditEvent(self, request, context):  # type: ignore[no-untyped-def]
        self.received.append(request)
        return auth_pb2.ReportAuditEventResponse()


async def test_permission_denied_writes_are_reported_to_auth(ts_db: Any, start_ingest: Any, tenant_id: str) -> None:
    recorder = _Audit()
    audit_app = GrpcApp(authenticator=None)
    audit_app.add_service(
        "tsmesh.v1.AuthService", lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(recorder, s)
    )
    port = await create_server(audit_app, CommonConfig.from_env({}, service="t", grpc_port=0, metrics_port=0))
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    audit = AuditReporter(channel)
    try:
        ingest = await start_ingest(ts_db, audit=audit)
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await ingest.stub.WriteBatch(
                ingest_harness.ingest_pb2.WriteRequest(points=[point("m", time.time_ns(), 1.0)]),
                metadata=ingest.auth(tenant_id, "read"),
                timeout=5,
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        await eventually(lambda: recorder.received)
        assert recorder.received[0].action == "permission_denied"
        assert "IngestService/WriteBatch" in recorder.received[0].detail
    finally:
        await audit.drain()
        await channel.close()
        await audit_app.stop(0)


async def test_background_tasks_keep_running_after_the_producer_connected(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db)
    await ingest.write(tenant_id, [point("alive", time.time_ns(), 1.0)])
    await settled(ingest, 1)
    await asyncio.sleep(0.3)
    app = ingest.runtime.app
    assert app.failure is None
    assert not app.stopping.is_set()
