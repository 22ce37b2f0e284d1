"""Swagger UI at /docs in a real chromium: it renders the gateway's OpenAPI 3.1 document (every
operation listed, no console error under the CSP), and "Try it out" calls the API with a token."""

from __future__ import annotations

import httpx
import pytest
from browserkit import Watched
from devstack import Stack
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

WAIT_MS = 15_000  # a bound on waiting, not a speed claim: the machine is shared
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def test_docs_render_every_operation_and_try_it_out_works(watched: Watched, stack: Stack) -> None:
    spec = httpx.get(f"{stack.gateway_url}/openapi.json", timeout=20).json()
    assert spec["openapi"].startswith("3.1")
    operations = {(m.upper(), path) for path, item in spec["paths"].items() for m in item if m in METHODS}
    page = watched.page
    page.goto("/docs")
    blocks = page.locator(".opblock")
    expect(blocks.first).to_be_visible(timeout=WAIT_MS)
    expect(page.get_by_text("Unable to render this definition")).to_have_count(0)
    expect(blocks).to_have_count(len(operations))
    shown = {
        (
            block.locator(".opblock-summary-method").inner_text().strip(),
            block.locator(".opblock-summary-path").get_attribute("data-path") or "",
        )
        for block in blocks.all()
    }
    assert shown == operations

    # Authorize with the demo token, then call GET /api/v1/labels from the page
    assert stack.token
    page.get_by_role("button", name="Authorize").first.click()
    dialog = page.locator(".dialog-ux")
    bearer = dialog.locator(".auth-container", has_text="bearer")
    bearer.locator("#auth-bearer-value").fill(stack.token)
    bearer.get_by_role("button", name="Apply credentials").click()
    expect(bearer.get_by_role("button", name="Remove authorization")).to_be_visible()
    dialog.locator(".close-modal").click()
    operation = page.locator("[id^=operations-][id$=-get_api_v1_labels]")
    operation.locator(".opblock-summary").click()
    operation.get_by_role("button", name="Try it out").click()
    operation.get_by_role("button", name="Execute").click()
    expect(operation.locator(".live-responses-table tbody .response-col_status").first).to_have_text(
        "200", timeout=WAIT_MS
    )
    watched.assert_clean(stack.token)
