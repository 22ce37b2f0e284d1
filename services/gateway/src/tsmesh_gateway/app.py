"""The gateway's ASGI application: Starlette, with the cached query routes answered first by the
fast path. :mod:`tsmesh_gateway.wiring` builds it."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from tsmesh_gateway.fastpath import FastQueries


class GatewayApp(Starlette):
    """The Starlette application, with the cached query routes answered first by :class:`FastQueries`."""

    fast: FastQueries | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if fast is not None and scope["type"] == "http" and await fast.serve(scope, receive, send):
            return
        await super().__call__(scope, receive, send)
