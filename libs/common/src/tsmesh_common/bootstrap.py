"""What every service starts the same way (ADR 0012): logs and tracing, the mesh authenticator over
the channel to auth, and the revocation follower.

A service's ``wiring.connect`` calls :func:`start_process` and :func:`connect_mesh`; its
``wiring.build`` calls :func:`follow_revocations` (a gRPC service) or runs :func:`revocation_feed`
(the gateway's lifespan). Auth verifies its own tokens: it builds the variant with
:func:`mesh_authenticator` over its key ring and token store.
"""

from __future__ import annotations

from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

import grpc

from tsmesh_common.audit import AuditReporter
from tsmesh_common.authn import (
    Authenticator,
    AuthenticatorConfig,
    GrpcAuthSource,
    IntrospectionSource,
    JwksSource,
    RevocationSource,
)
from tsmesh_common.client import create_channel
from tsmesh_common.config import CommonConfig
from tsmesh_common.logs import configure_logging
from tsmesh_common.server import GrpcApp
from tsmesh_common.tracing import setup_tracing


def start_process(common: CommonConfig) -> None:
    """Configure this process's logs and tracing (once, from the composition root)."""
    configure_logging(common.service, common.log_level)
    setup_tracing(common.service, common.otlp_endpoint)


def mesh_authenticator(
    common: CommonConfig,
    jwks: JwksSource,
    introspection: IntrospectionSource,
    revocations: RevocationSource | None,
    api_token_cache_seconds: float = AuthenticatorConfig.api_token_cache_seconds,
) -> Authenticator:
    """The authenticator for this mesh's issuer, audience and maximum token lifetime, loading the
    durable revocation list from ``revocations`` (ADR 0106); auth turns its API-token cache off:
    its introspection is its own store."""
    config = AuthenticatorConfig.from_common(common, api_token_cache_seconds=api_token_cache_seconds)
    return Authenticator(config, jwks, introspection, revocations=revocations)


@dataclass
class Mesh:
    """A service's view of auth: the authenticator, the audit reporter and the channel they ride on
    (tests give an authenticator over a local key set, and no channel)."""

    authenticator: Authenticator
    audit: AuditReporter | None = None
    channel: grpc.aio.Channel | None = None

    async def close(self) -> None:
        """Send the audit events still queued, then close the channel."""
        if self.audit is not None:
            await self.audit.drain()
        if self.channel is not None:
            await self.channel.close(None)


def connect_mesh(common: CommonConfig) -> Mesh:
    """Open the channel to auth: JWKS and introspection for the authenticator, audit reports."""
    channel = create_channel(common.auth_addr, common.grpc)
    source = GrpcAuthSource(channel)
    audit = AuditReporter(channel, credential=common.service_credential)
    return Mesh(mesh_authenticator(common, source, source, revocations=source), audit, channel)


def revocation_feed(common: CommonConfig, authenticator: Authenticator, redis: Any) -> Coroutine[Any, Any, None]:
    """Follow the deployment's revocation channel until cancelled (for the life of the process)."""
    return authenticator.follow_revocations(redis, common.redis_namespace.revocation_channel)


def follow_revocations(common: CommonConfig, app: GrpcApp, authenticator: Authenticator, redis: Any) -> None:
    """Follow revocations for as long as ``app`` serves."""
    app.run_in_background(revocation_feed(common, authenticator, redis), "revocations")
