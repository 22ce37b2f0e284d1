"""The gateway's HTTP routes, one module per API family, mounted by :func:`mount`.

A new family (say ``routes/prometheus.py``) is one module exposing a function that returns its
Starlette routes bound to :class:`~tsmesh_gateway.deps.Deps`, and one line in :func:`mount`.
Handlers raise :mod:`tsmesh_common.errors` (mapped to HTTP by :mod:`tsmesh_gateway.http_errors`),
authorize through ``deps.authorize(request, route_class, scope)`` (scope check and rate limit), and
are wrapped in :func:`tsmesh_gateway.deps.endpoint`; their OpenAPI entries live in
:mod:`tsmesh_gateway.openapi`.
"""

from __future__ import annotations

import os

from starlette.routing import BaseRoute

from tsmesh_gateway.deps import Deps
from tsmesh_gateway.openapi import spec
from tsmesh_gateway.querycache import QueryCache
from tsmesh_gateway.routes.admin import admin_routes
from tsmesh_gateway.routes.auth import auth_routes
from tsmesh_gateway.routes.data import query_routes
from tsmesh_gateway.routes.influx import influx_routes
from tsmesh_gateway.routes.ops import ops_routes
from tsmesh_gateway.routes.prometheus import prometheus_routes
from tsmesh_gateway.routes.push import push_routes
from tsmesh_gateway.routes.ui import ui_routes


def mount(deps: Deps, queries: QueryCache) -> list[BaseRoute]:
    """Every family's HTTP routes (the WebSocket route is the stream's, added by the app)."""
    return [
        *query_routes(deps, queries),
        *influx_routes(deps),
        *prometheus_routes(deps),
        *push_routes(deps),
        *auth_routes(deps),
        *admin_routes(deps),
        *ops_routes(deps.upstreams, spec, os.environ.get("PROMETHEUS_MULTIPROC_DIR")),
        *ui_routes(),
    ]
