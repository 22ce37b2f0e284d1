"""Shared building blocks of the tsmesh services.

Services import from the submodules (``from tsmesh_common.config import Env``); ``__all__`` is the
map of the public ones, grouped by role. A module not listed is an implementation detail of the
listed ones (``interceptors`` of ``server``, ``grpc_tuning`` of ``server`` and
``client``, ``otlp_names`` of ``otlp_metrics``). ``tests/common/test_public_face.py`` checks that
the list is exactly what the services, the CLI and the scripts import.
"""

__all__ = [  # noqa: RUF022 (grouped by role, not sorted)
    # Configuration and the one error hierarchy
    "config",
    "errors",
    # A service process: its bootstrap (logs, traces, the mesh authenticator, revocations), gRPC server
    # skeleton and metrics endpoint, clients, breakers, logs, traces, migrations
    "bootstrap",
    "server",
    "metrics_http",
    "client",
    "breaker",
    "logs",
    "tracing",
    "migrations",
    # Who is calling: request context, token authentication, login identities, audit reports,
    # a service's own credential towards auth
    "context",
    "authn",
    "identity",
    "audit",
    "service_credential",
    # Redis shared between services: key and channel names, the lean connection, rate limits
    "redis_keys",
    "leanredis",
    "ratelimit",
    # Wire formats: protobuf pieces, WriteRequest bytes, OTLP metrics (read as a view, translated)
    "protowire",
    "pointwire",
    "otlp_view",
    "otlp_metrics",
]
