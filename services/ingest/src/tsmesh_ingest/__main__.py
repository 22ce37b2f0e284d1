"""Composition root and CLI of the ingest service.

python -m tsmesh_ingest                 serve (TSMESH_INGEST_MODE=all|api|writer)
python -m tsmesh_ingest migrate         apply the ts schema migrations, create today's partitions
python -m tsmesh_ingest create-topics   create the points and dead-letter topics (idempotent)
"""

from __future__ import annotations

import asyncio
import os
import sys

import asyncpg

from tsmesh_common import migrations
from tsmesh_common.config import load_or_exit
from tsmesh_common.server import run, serve
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.migrate import upgrade
from tsmesh_ingest.partitions import PartitionManager
from tsmesh_ingest.topics import create_topics
from tsmesh_ingest.wiring import build, connect

USAGE = "usage: python -m tsmesh_ingest [migrate | create-topics]"


async def _serve(cfg: IngestConfig) -> None:
    runtime = await build(cfg, connect(cfg))
    await runtime.start()
    await serve(runtime.app, cfg.common)


async def _migrate(cfg: IngestConfig) -> None:
    await asyncio.to_thread(upgrade, cfg.database_url)
    conn = await asyncpg.connect(cfg.database_url)
    try:  # under the migrations' lock: concurrent runs would race on creating the same partitions
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", migrations.lock_key("ts"))
        created = await PartitionManager().ensure_window(conn, cfg.writer.raw_days, cfg.writer.partitions_ahead_days)
    finally:
        await conn.close()
    print(f"schema ts migrated; {created} partitions created")


async def _create_topics(cfg: IngestConfig) -> None:
    created = await create_topics(cfg.kafka)
    print(f"topics ready ({', '.join(created) if created else 'already present'})")


def main() -> None:
    cfg = load_or_exit(IngestConfig.from_env, os.environ)
    command = sys.argv[1] if len(sys.argv) > 1 else "serve"
    if command == "serve":
        run(lambda: _serve(cfg))
    elif command == "migrate":
        asyncio.run(_migrate(cfg))
    elif command == "create-topics":
        asyncio.run(_create_topics(cfg))
    else:
        print(USAGE, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
