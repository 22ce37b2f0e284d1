"""One ingest process at run time: its API side (mode api/all) and writer side (mode writer/all),
and the background loops ``start`` launches (assembled by :mod:`tsmesh_ingest.wiring`)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from tsmesh_common.server import GrpcApp
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.db import operation
from tsmesh_ingest.live import LivePublisher
from tsmesh_ingest.partitions import PartitionManager
from tsmesh_ingest.producer import PointProducer
from tsmesh_ingest.retention import Retention
from tsmesh_ingest.rollups import RollupRefresher
from tsmesh_ingest.service import SERVICE_NAME
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
