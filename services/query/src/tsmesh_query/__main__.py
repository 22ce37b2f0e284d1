"""Composition root of the query service: config, logging, tracing, server; nothing at import time."""

from __future__ import annotations

import os

from tsmesh_common.config import CommonConfig, load_or_exit
from tsmesh_common.logs import configure_logging
from tsmesh_common.server import GrpcApp, run, serve
from tsmesh_common.tracing import setup_tracing


async def _main() -> None:
    cfg = load_or_exit(lambda env: CommonConfig.from_env(env, service="query", grpc_port=50052, metrics_port=9102), os.environ)
    configure_logging(cfg.service, cfg.log_level)
    setup_tracing(cfg.service, cfg.otlp_endpoint)
    app = GrpcApp(authenticator=None)
    await serve(app, cfg)


def main() -> None:
    run(_main)


if __name__ == "__main__":
    main()
