"""gzip for responses over 1 KB, entered only by requests that accept gzip (the common
uncompressed path then costs one header scan instead of a responder per request)."""

from __future__ import annotations

from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

MINIMUM_SIZE = 1024


class GzipWhenAccepted:
    """Starlette's GZipMiddleware (minimum 1 KB), skipped when the client does not accept gzip."""

    def __init__(self, app: ASGIApp, minimum_size: int = MINIMUM_SIZE) -> None:
        self.app = app
        self._gzip = GZipMiddleware(app, minimum_size=minimum_size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for key, value in scope["headers"]:
                if key == b"accept-encoding":
                    if b"gzip" in value:
                        await self._gzip(scope, receive, send)
                        return
                    break
        await self.app(scope, receive, send)
