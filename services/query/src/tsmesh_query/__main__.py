"""``python -m tsmesh_query``: config -> clients -> service -> serve (the shape is ADR 0012)."""

from __future__ import annotations

import os

from tsmesh_common.config import load_or_exit
from tsmesh_common.server import run, serve
from tsmesh_query.config import QueryConfig
from tsmesh_query.wiring import build, connect


async def _main() -> None:
    cfg = load_or_exit(QueryConfig.from_env, os.environ)
    components = build(cfg, connect(cfg))
    await serve(components.app, cfg.common)


def main() -> None:
    """Entry point of ``python -m tsmesh_query`` and ``tsmesh-query``."""
    run(_main)


if __name__ == "__main__":
    main()
