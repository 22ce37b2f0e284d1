"""``python -m tsmesh_ingest create-topics``: the points topic and its dead-letter topic, idempotently."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tsmesh_ingest.config import KafkaConfig

log = logging.getLogger(__name__)

TOPIC_ALREADY_EXISTS = 36


async def create_topics(config: KafkaConfig) -> list[str]:
    """Create ``config.topic`` and ``config.dlq_topic`` (replication and ``min.insync.replicas`` as
    configured); returns the names actually created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap,
        request_timeout_ms=config.request_timeout_ms,
        **config.security.client_kwargs(),
    )
    settings = {"min.insync.replicas": str(config.min_insync_replicas)} if config.min_insync_replicas > 1 else {}
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(name, num_partitions=partitions, replication_factor=config.replication, topic_configs=settings)
            for name, partitions in ((config.topic, config.partitions), (config.dlq_topic, 1))
            if name not in existing
        ]
        if not wanted:
            return []
        response: Any = await admin.create_topics(wanted)
        created = []
        for entry in response.topic_errors:
            name, code = entry[0], entry[1]
            if code == 0:
                created.append(name)
            elif code != TOPIC_ALREADY_EXISTS:
                raise RuntimeError(f"creating topic {name} failed with Kafka error code {code}")
        return created
    finally:
        await admin.close()
