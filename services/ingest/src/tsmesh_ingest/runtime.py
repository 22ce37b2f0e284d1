"""Wiring of the ingest process: API side (mode api/all) and writer side (mode writer/all).

``__main__`` builds the config, authenticator and Redis client and hands them here; tests do the
same with their own authenticator, so what they run is exactly what production runs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tsmesh_common.audit import AuditReporter
from tsmesh_common.authn import Authenticator
from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.ratelimit import RateLimiter
from tsmesh_common.server import GrpcApp
from tsmesh_ingest import otlp_service
from tsmesh_ingest.admission import Admission
from tsmesh_ingest.batching import AdaptiveBatcher
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.db import operation
from tsmesh_ingest.lifecycle import SERVICE_NAME as LIFECYCLE_SERVICE
from tsmesh_ingest.lifecycle import LifecycleServicer
from tsmesh_ingest.lifecycle import add_to_server as add_lifecycle
from tsmesh_ingest.limits import StaticLimits
from tsmesh_ingest.live import LivePublisher
from tsmesh_ingest.partitions import PartitionManager
from tsmesh_ingest.producer import PointProducer
from tsmesh_ingest.retention import Retention, RetentionDays
from tsmesh_ingest.rollups import RollupRefresher
from tsmesh_ingest.series_admission import SeriesAdmission
from tsmesh_ingest.series_id import SeriesIdCache
from tsmesh_ingest.service import SERVICE_NAME, IngestServicer, add_to_server
from tsmesh_ingest.store import KnownSeries, PointStore, WriterHooks
from tsmesh_ingest.validation import Validator
from tsmesh_ingest.writer import Writer

log = logging.getLogger(__name__)


@dataclass
class IngestRuntime:
    """Everything one ingest process runs; ``start`` launches the background loops on ``app``."""

    cfg: IngestConfig
    app: GrpcApp
    producer: PointProducer | None = None
    live: LivePublisher | None = None
    pool: Any = None
    writer: Writer | None = None
    refresher: RollupRefresher | None = None
    retention: Retention | None = None
    partitions: PartitionManager = field(default_factory=PartitionManager)

    async def start(self) -> None:
        """Background loops; each ends only on cancellation (an ending one stops the server)."""
        if self.producer is not None:
            await self.app.report(SERVICE_NAME, serving=False)
            self.app.run_in_background(self._connect_and_stay(self.producer), "kafka-producer-connect")
        if self.writer is not None:
            self.app.run_in_background(self.writer.run(), "writer")
        if self.refresher is not None:
            self.app.run_in_background(self.refresher.run(), "rollup-refresher")
        if self.pool is not None:
            self.app.run_in_background(self._maintenance(), "maintenance")

    async def _connect_and_stay(self, producer: PointProducer) -> None:
        """Connect (retrying while the broker is down), then stay: a return would stop the server.

        Until connected, the IngestService health is NOT_SERVING (writes would only be refused).
        """
        await producer.start_with_retry()
        await self.app.report(SERVICE_NAME, serving=True)
        await asyncio.Event().wait()

    @property
    def ready(self) -> bool:
        """Whether writes can be accepted (the producer is connected)."""
        return self.producer is None or self.producer.connected

    async def maintain_once(self) -> None:
        """Partitions from retention ago to N days ahead, then retention."""
        async with operation(self.pool) as conn:
            w = self.cfg.writer
            await self.partitions.ensure_window(conn, w.raw_days, w.partitions_ahead_days)
        if self.retention is not None:
            await self.retention.run_once()

    async def _maintenance(self) -> None:
        while True:
            try:
                await self.maintain_once()
                delay = self.cfg.writer.maintenance_interval_s
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - retried soon: the database may be starting
                log.warning("maintenance failed, retrying", extra={"error": type(exc).__name__})
                delay = 5.0
            await asyncio.sleep(delay)

    async def close(self) -> None:
        if self.live is not None:
            await self.live.drain()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()


async def build_runtime(
    cfg: IngestConfig,
    authenticator: Authenticator | None,
    redis: Any,
    *,
    hooks: WriterHooks | None = None,
    audit: AuditReporter | None = None,
) -> IngestRuntime:
    """Construct the API and/or writer of ``cfg.mode`` around shared clients; ``audit`` reports
    PERMISSION_DENIED answers to auth."""
    app = GrpcApp(authenticator, audit=audit, tuning=cfg.common.grpc)
    runtime = IngestRuntime(cfg=cfg, app=app)
    if cfg.runs_api:
        runtime.producer = PointProducer(cfg.kafka)
        runtime.live = LivePublisher(redis, lean=LeanRedis.from_url(cfg.common.redis_url))
        limiter = RateLimiter(redis, prefix="tsmesh:ingest:rate")
        series = SeriesAdmission(redis, unchecked_new_series=cfg.unchecked_new_series)
        admission = Admission(StaticLimits(cfg.limits, cfg.limit_overrides), limiter, series)
        validator = Validator(cfg.validation, SeriesIdCache())
        servicer = IngestServicer(validator, admission, runtime.producer, runtime.live)
        app.add_service(SERVICE_NAME, lambda server: add_to_server(servicer, server))
        otlp_service.register(app, servicer, cfg.validation.max_points_per_request)
    if cfg.runs_writer:
        w = cfg.writer
        runtime.pool = await asyncpg.create_pool(
            cfg.database_url, min_size=0, max_size=w.pool_size, timeout=5.0, command_timeout=60.0
        )
        store = PointStore(runtime.pool, runtime.partitions, KnownSeries(), hooks)
        consumer = AIOKafkaConsumer(
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
        dlq = AIOKafkaProducer(
            bootstrap_servers=cfg.kafka.bootstrap,
            client_id="tsmesh-ingest-dlq",
            acks="all",
            enable_idempotence=cfg.kafka.idempotence,
            request_timeout_ms=cfg.kafka.request_timeout_ms,
            max_request_size=8 * 1024 * 1024,
            **cfg.kafka.security.client_kwargs(),
        )
        batcher = AdaptiveBatcher(w.min_rows, w.max_rows, w.max_wait_ms / 1000, w.linger_ms / 1000)
        runtime.writer = Writer(
            consumer,
            dlq,
            cfg.kafka.dlq_topic,
            store,
            redis,
            batcher,
            retry_max_seconds=w.retry_max_seconds,
            hooks=hooks,
            late_window_seconds=w.late_window_s,
        )
        runtime.refresher = RollupRefresher(
            runtime.pool, batch=w.rollup_batch, interval_seconds=w.rollup_interval_ms / 1000
        )
        defaults = RetentionDays(w.raw_days, w.rollup_1m_days, w.rollup_1h_days)
        runtime.retention = Retention(runtime.pool, runtime.partitions, defaults)
        limits = StaticLimits(cfg.limits, cfg.limit_overrides)
        lifecycle = LifecycleServicer(runtime.pool, defaults, limits, redis, refresher=runtime.refresher, audit=audit)
        app.add_service(LIFECYCLE_SERVICE, lambda server: add_lifecycle(lifecycle, server))
    app.on_shutdown(runtime.close)
    return runtime
