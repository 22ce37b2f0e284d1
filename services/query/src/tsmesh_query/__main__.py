"""Composition root of the query service: config -> clients -> components -> serve."""

from __future__ import annotations

import os

from tsmesh_common.audit import AuditReporter
from tsmesh_common.authn import Authenticator, AuthenticatorConfig, GrpcAuthSource
from tsmesh_common.client import create_channel
from tsmesh_common.config import load_or_exit
from tsmesh_common.logs import configure_logging
from tsmesh_common.server import run, serve
from tsmesh_common.tracing import setup_tracing
from tsmesh_query.config import QueryConfig
from tsmesh_query.wiring import build, create_redis


async def _main() -> None:
    cfg = load_or_exit(QueryConfig.from_env, os.environ)
    common = cfg.common
    configure_logging(common.service, common.log_level)
    setup_tracing(common.service, common.otlp_endpoint)
    channel = create_channel(common.auth_addr, common.grpc)
    source = GrpcAuthSource(channel)
    authenticator = Authenticator(AuthenticatorConfig.from_common(common), source, source, revocations=source)
    redis = create_redis(common.redis_url)
    audit = AuditReporter(channel, credential=common.service_credential)
    components = build(cfg, authenticator, redis, audit=audit)
    components.app.run_in_background(
        authenticator.follow_revocations(redis, common.redis_namespace.revocation_channel), "revocations"
    )

    async def close_channel() -> None:
        await audit.drain()
        await channel.close(None)

    components.app.on_shutdown(close_channel)
    await serve(components.app, common)


def main() -> None:
    """Entry point of ``python -m tsmesh_query`` and ``tsmesh-query``."""
    run(_main)


if __name__ == "__main__":
    main()
