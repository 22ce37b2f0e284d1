"""Browser fixtures: a private stack (never ``make run``'s) and Debian's chromium driven by Playwright
(its own browser download is not reachable here; ``make tools`` installs chromium).

Everything is module-scoped, not package-scoped: this folder is no package, so a package scope would
last the whole session, and Playwright's sync API marks its event loop as running in this thread
while it is started, which breaks the async tests of the modules that follow."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browserkit import Watched
from devstack import Stack
from playwright.sync_api import Browser, Playwright, sync_playwright
from stackkit import private_stack

CHROMIUM = Path(os.environ.get("TSMESH_CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with private_stack(tmp_path_factory.mktemp("console-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make tools` installs Debian's chromium")
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
    yield browser
    browser.close()


@pytest.fixture
def watched(browser: Browser, stack: Stack) -> Iterator[Watched]:
    context = browser.new_context(base_url=stack.gateway_url, viewport={"width": 1280, "height": 860})
    page = context.new_page()
    watch = Watched(page)
    page.on("console", watch.on_console)
    page.on("pageerror", lambda error: watch.errors.append(f"uncaught: {error}"))
    page.on("request", lambda request: watch.urls.append(request.url))
    page.on("websocket", lambda socket: watch.urls.append(socket.url))
    yield watch
    context.close()


@pytest.fixture
def api(stack: Stack) -> Iterator[httpx.Client]:
    """The gateway over HTTP with the stack's demo token (read, write and admin)."""
    assert stack.token
    with httpx.Client(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {stack.token}"}, timeout=20
    ) as client:
        yield client


@pytest.fixture
def metric() -> str:
    return f"console_{uuid.uuid4().hex[:8]}"
