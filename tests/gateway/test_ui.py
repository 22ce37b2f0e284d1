"""The console's serving (routes/ui.py) behind the edge middleware: its own strict policy replaces
the gateway's default on the page only, and every module the page imports is served."""

from __future__ import annotations

import re

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from tsmesh_gateway.edge import CSP, EdgeMiddleware
from tsmesh_gateway.routes.ui import CONSOLE_CSP, CONSOLE_DIR, ui_routes

IMPORT = re.compile(r'^import .* from "\./([\w/.-]+)";$', re.MULTILINE)


async def plain(request: Request) -> Response:
    return PlainTextResponse("ok")


def client() -> httpx.AsyncClient:
    app = Starlette(routes=[*ui_routes(), Route("/other", plain)], middleware=[Middleware(EdgeMiddleware)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")


async def test_the_page_carries_only_the_console_policy_and_other_routes_the_default() -> None:
    async with client() as http:
        page = await http.get("/ui")
        other = await http.get("/other")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.headers.get_list("content-security-policy") == [CONSOLE_CSP]
    assert "unsafe" not in CONSOLE_CSP and "script-src 'self'" in CONSOLE_CSP
    assert other.headers.get_list("content-security-policy") == [CSP.decode()]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and " style=" not in page.text


async def test_every_module_the_page_loads_is_served() -> None:
    modules = ["main.js"]
    seen: set[str] = set()
    async with client() as http:
        while modules:
            name = modules.pop()
            if name in seen:
                continue
            seen.add(name)
            answer = await http.get(f"/ui/static/{name}")
            assert answer.status_code == 200, name
            assert answer.headers["content-type"].startswith("text/javascript"), name
            base = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
            modules.extend(base + target for target in IMPORT.findall(answer.text))
        for asset in ("console.css", "vendor/uplot/uPlot.min.css"):
            assert (await http.get(f"/ui/static/{asset}")).status_code == 200
    assert {"main.js", "chart.js", "vendor/uplot/uPlot.esm.js", "live.js", "session.js"} <= seen
    assert (CONSOLE_DIR / "vendor" / "uplot" / "LICENSE").read_text().startswith("The MIT License")
