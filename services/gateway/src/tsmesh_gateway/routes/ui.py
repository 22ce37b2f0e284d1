"""The web console at ``/ui``: a page of plain ES modules and CSS served from ``static/console``,
with no build step (docs/adr/0503-web-console.md).

The page gets a stricter Content-Security-Policy than the gateway's default (no inline style either,
``connect-src 'self'`` covering the same-origin WebSocket); the edge keeps a policy a route set.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "static" / "console"
CONSOLE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; object-src 'none'"
)


class ConsolePage:
    """``GET /ui``: the console's one HTML page, read once."""

    def __init__(self, directory: Path) -> None:
        self._html = (directory / "index.html").read_bytes()

    async def serve(self, request: Request) -> Response:
        return HTMLResponse(self._html, headers={"Content-Security-Policy": CONSOLE_CSP, "Cache-Control": "no-cache"})


def ui_routes(directory: Path = CONSOLE_DIR) -> list[BaseRoute]:
    """The console page and its static modules, styles and vendored chart library."""
    return [
        Route("/ui", ConsolePage(directory).serve, methods=["GET"]),
        Mount("/ui/static", StaticFiles(directory=directory), name="console"),
    ]
