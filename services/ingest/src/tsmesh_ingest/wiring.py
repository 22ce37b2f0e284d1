"""The ingest service's composition root: ``connect`` opens its clients, ``build`` assembles the API
side (mode api/all) and the writer side (mode writer/all) over them (ADR 0012).

``__main__`` runs both; tests hand ``build`` their own clients, so what they run is exactly what
production runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tsmesh_common.bootstrap import Mesh, connect_mesh, follow_revocations, start_process
from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.ratelimit import RateLimiter
from tsmesh_common.server import GrpcApp
from tsmesh_ingest import otlp_service
from tsmesh_ingest.admission import Admission
from tsmesh_ingest.batching import AdaptiveBatcher
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.lifecycle import SERVICE_NAME as LIFECYCLE_SERVICE
from tsmesh_ingest.lifecycle import LifecycleServicer
from tsmesh_ingest.lifecycle import add_to_server as add_lifecycle
from tsmesh_ingest.limits import StaticLimits
from tsmesh_ingest.live import LivePublisher
from tsmesh_ingest.producer import PointProducer
from tsmesh_ingest.retention import Retention, RetentionDays
from tsmesh_ingest.rollups import RollupRefresher
from tsmesh_ingest.runtime import IngestRuntime
from tsmesh_ingest.series_admission import SeriesAdmission
from tsmesh_ingest.series_id import SeriesIdCache
from tsmesh_ingest.service import SERVICE_NAME, IngestServicer, add_to_server
from tsmesh_ingest.store import KnownSeries, PointStore, WriterHooks
from tsmesh_ingest.validation import Validator
from tsmesh_ingest.writer import Writer


@dataclass
class IngestClients:
    """What an ingest process talks to: Redis, and auth (both modes authenticate: the API serves
    writes, the writer the admin DataLifecycleService)."""

    redis: Any
    mesh: Mesh | None

    async def close(self) -> None:
        await self.redis.aclose()
        if self.mesh is not None:
            await self.mesh.close()


def connect(cfg: IngestConfig) -> IngestClients:
    """Start logging and tracing, then open the clients of an ingest process."""
    start_process(cfg.common)
    redis = aioredis.Redis.from_url(cfg.common.redis_url, socket_connect_timeout=1.0, socket_timeout=2.0)
    return IngestClients(redis, connect_mesh(cfg.common))


async def build(cfg: IngestConfig, clients: IngestClients, *, hooks: WriterHooks | None = None) -> IngestRuntime:
    """Construct the API and/or writer of ``cfg.mode`` around ``clients`` (the writer's pool is
    opened here: it exists only in writer mode); ``runtime.start`` launches the loops."""
    mesh = clients.mesh
    app = GrpcApp(
        mesh.authenticator if mesh is not None else None,
        audit=mesh.audit if mesh is not None else None,
        tuning=cfg.common.grpc,
    )
    runtime = IngestRuntime(cfg=cfg, app=app)
    if cfg.runs_api:
        _build_api(cfg, clients.redis, runtime)
    if cfg.runs_writer:
        await _build_writer(cfg, clients, runtime, hooks)
    if mesh is not None:
        follow_revocations(cfg.common, app, mesh.authenticator, clients.redis)
    app.on_shutdown(runtime.close)
    app.on_shutdown(clients.close)
    return runtime


def _build_api(cfg: IngestConfig, redis: Any, runtime: IngestRuntime) -> None:
    runtime.producer = PointProducer(cfg.kafka)
    namespace = cfg.common.redis_namespace
    runtime.live = LivePublisher(redis, namespace, lean=LeanRedis.from_url(cfg.common.redis_url))
    limiter = RateLimiter(redis, prefix=namespace.ingest_rate_prefix)
    series = SeriesAdmission(redis, namespace, unchecked_new_series=cfg.unchecked_new_series)
    admission = Admission(StaticLimits(cfg.limits, cfg.limit_overrides), limiter, series)
    validator = Validator(cfg.validation, SeriesIdCache())
    servicer = IngestServicer(validator, admission, runtime.producer, runtime.live)
    runtime.app.add_service(SERVICE_NAME, lambda server: add_to_server(servicer, server))
    otlp_service.register(runtime.app, servicer, cfg.validation.max_points_per_request)


async def _build_writer(
    cfg: IngestConfig, clients: IngestClients, runtime: IngestRuntime, hooks: WriterHooks | None
) -> None:
    w = cfg.writer
    runtime.pool = await asyncpg.create_pool(
        cfg.database_url, min_size=0, max_size=w.pool_size, timeout=5.0, command_timeout=60.0
    )
    store = PointStore(runtime.pool, runtime.partitions, KnownSeries(), hooks)
    batcher = AdaptiveBatcher(w.min_rows, w.max_rows, w.max_wait_ms / 1000, w.linger_ms / 1000)
    runtime.writer = Writer(
        _consumer(cfg),
        _dlq_producer(cfg),
        cfg.kafka.dlq_topic,
        store,
        clients.redis,
        batcher,
        retry_max_seconds=w.retry_max_seconds,
        namespace=cfg.common.redis_namespace,
        hooks=hooks,
        late_window_seconds=w.late_window_s,
    )
    runtime.refresher = RollupRefresher(
        runtime.pool, batch=w.rollup_batch, interval_seconds=w.rollup_interval_ms / 1000
    )
    defaults = RetentionDays(w.raw_days, w.rollup_1m_days, w.rollup_1h_days)
    runtime.retention = Retention(runtime.pool, runtime.partitions, defaults)
    limits = StaticLimits(cfg.limits, cfg.limit_overrides)
    audit = clients.mesh.audit if clients.mesh is not None else None
    lifecycle = LifecycleServicer(
        runtime.pool,
        defaults,
        limits,
        clients.redis,
        cfg.common.redis_namespace,
        refresher=runtime.refresher,
        audit=audit,
    )
    runtime.app.add_service(LIFECYCLE_SERVICE, lambda server: add_lifecycle(lifecycle, server))


def _consumer(cfg: IngestConfig) -> AIOKafkaConsumer:
    w = cfg.writer
    return AIOKafkaConsumer(
        cfg.kafka.topic,
        bootstrap_servers=cfg.kafka.bootstrap,
        group_id=cfg.kafka.group,
        client_id="tsmesh-ingest-writer",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=min(w.max_wait_ms, 50),
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
        max_poll_interval_ms=30 * 60 * 1000,
        session_timeout_ms=cfg.kafka.session_timeout_ms,
        heartbeat_interval_ms=max(100, cfg.kafka.session_timeout_ms // 5),
        rebalance_timeout_ms=cfg.kafka.session_timeout_ms,
        **cfg.kafka.security.client_kwargs(),
    )


def _dlq_producer(cfg: IngestConfig) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=cfg.kafka.bootstrap,
        client_id="tsmesh-ingest-dlq",
        acks="all",
        enable_idempotence=cfg.kafka.idempotence,
        request_timeout_ms=cfg.kafka.request_timeout_ms,
        max_request_size=8 * 1024 * 1024,
        **cfg.kafka.security.client_kwargs(),
    )
