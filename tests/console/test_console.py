"""The web console at /ui in a real chromium against a real private stack: sign-in, the metric and
label browser, a PromQL range query drawn as a chart, live mode over the WebSocket, token
management, the Content-Security-Policy, and no token in any URL."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import httpx
import pytest
from browserkit import Watched
from devstack import DEMO_EMAIL, DEMO_TENANT, Stack
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.e2e

WAIT_MS = 15_000  # a bound on waiting, not a speed claim: the machine is shared


def write(api: httpx.Client, metric: str, points: list[tuple[dict[str, str], int, float]]) -> None:
    body = {
        "points": [{"metric": metric, "labels": labels, "timestamp_ns": ts, "value": v} for labels, ts, v in points]
    }
    answer = api.post("/v1/write", json=body)
    assert answer.status_code == 200, answer.text


def wait_until(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    """Poll ``check`` (a bound on waiting for the writer or a revocation to land, not a speed claim)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"still not {what} after {seconds} s"
        time.sleep(0.1)


def stored(api: httpx.Client, metric: str, series: int) -> None:
    """Wait until the writer has stored ``series`` series of ``metric`` (a write is answered once Kafka has it)."""

    def check() -> bool:
        answer = api.get("/api/v1/series", params={"match[]": metric})
        return answer.status_code == 200 and len(answer.json()["data"]) == series

    wait_until(check, f"{series} series of {metric} stored")


def sign_in_with_password(page: Page, stack: Stack) -> str:
    page.goto("/ui")
    form = page.locator("#password-form")
    form.get_by_label("Tenant").fill(DEMO_TENANT)
    form.get_by_label("Email").fill(DEMO_EMAIL)
    form.get_by_label("Password").fill(stack.admin_password or "")
    form.get_by_role("button", name="Sign in").click()
    expect(page.locator("#explore-view")).to_be_visible()
    token = page.evaluate("JSON.parse(sessionStorage.getItem('tsmesh.console.session')).access")
    assert isinstance(token, str) and token
    return token


def sign_in_with_token(page: Page, token: str) -> None:
    page.goto("/ui")
    page.locator("#token-form").get_by_label("Token").fill(token)
    page.get_by_role("button", name="Use token").click()
    expect(page.locator("#explore-view")).to_be_visible()


def test_browse_a_metric_and_chart_a_query(watched: Watched, stack: Stack, api: httpx.Client, metric: str) -> None:
    now = int(time.time())
    write(
        api,
        metric,
        [({"host": h}, (now - 120 + 15 * k) * 10**9, v + k) for h, v in (("a", 1.0), ("b", 10.0)) for k in range(6)],
    )
    stored(api, metric, 2)
    page = watched.page
    token = sign_in_with_password(page, stack)

    # the metric is offered for autocomplete; choosing it shows its series and labels
    expect(page.locator(f'#metric-names option[value="{metric}"]')).to_have_count(1, timeout=WAIT_MS)
    page.locator("#metric").fill(metric)
    page.locator("#metric").press("Enter")
    expect(page.locator("#series-count")).to_have_text("2 series", timeout=WAIT_MS)
    page.locator("#label-name").select_option("host")
    expect(page.locator("#label-values .chip")).to_have_text(["a", "b"], timeout=WAIT_MS)
    page.locator("#label-values .chip", has_text="b").click()
    expect(page.locator("#query")).to_have_value(f'{metric}{{host="b"}}')

    page.locator("#range").select_option("900")
    page.get_by_role("button", name="Run query").click()
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-series", "1", timeout=WAIT_MS)
    expect(chart.locator("canvas")).to_have_count(1)
    rows = page.locator("#series-table tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator("td").nth(0)).to_have_text(f'{metric}{{host="b"}}')
    expect(rows.first.locator("td").nth(2)).to_have_text("15")  # the last point written for host b

    # a PromQL expression over both series
    page.locator("#query").fill(f"sum({metric})")
    page.get_by_role("button", name="Run query").click()
    expect(rows.first.locator("td").nth(2)).to_have_text("21", timeout=WAIT_MS)  # 15 + 6 at the last step
    if path := os.environ.get("TSMESH_CONSOLE_SCREENSHOT"):
        page.locator("#range").select_option("300")
        page.locator("#query").fill(metric)
        page.get_by_role("button", name="Run query").click()
        expect(chart).to_have_attribute("data-series", "2", timeout=WAIT_MS)
        page.screenshot(path=path)
    watched.assert_clean(token)


def test_live_mode_appends_a_point_written_during_the_test(
    watched: Watched, stack: Stack, api: httpx.Client, metric: str
) -> None:
    now = int(time.time())
    write(api, metric, [({"host": "live"}, (now - 30) * 10**9, 1.0)])
    stored(api, metric, 1)
    page = watched.page
    assert stack.token
    sign_in_with_token(page, stack.token)
    page.locator("#query").fill(f'{metric}{{host=~"li.e"}}')  # parsed by the query service's PromQL parser
    page.locator("#range").select_option("300")
    page.locator("#live").check()
    expect(page.locator("#status")).to_have_text("live: subscribed", timeout=WAIT_MS)
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-series", "1")
    before = int(chart.get_attribute("data-points") or "0")

    write(api, metric, [({"host": "live"}, time.time_ns(), 42.5)])
    last = page.locator("#series-table tbody tr").first.locator("td").nth(2)
    expect(last).to_have_text("42.5", timeout=WAIT_MS)
    assert int(chart.get_attribute("data-points") or "0") == before + 1
    expect(page.locator("#status")).to_contain_text("live: 1 series")
    page.locator("#live").uncheck()
    expect(page.locator("#status")).to_have_text("live mode off")

    # an expression is no series selector: the gateway's refusal is shown and live mode turns off
    page.locator("#query").fill(f"sum({metric})")
    page.locator("#live").check()
    expect(page.locator("#status")).to_contain_text("live: INVALID_ARGUMENT", timeout=WAIT_MS)
    expect(page.locator("#live")).not_to_be_checked()
    watched.assert_clean(stack.token)


def test_tokens_are_created_listed_and_revoked(watched: Watched, stack: Stack, metric: str) -> None:
    page = watched.page
    token = sign_in_with_password(page, stack)
    page.get_by_role("button", name="Tokens").click()
    form = page.locator("#token-create")
    form.get_by_label("Name").fill(metric)
    form.get_by_label("write").check()
    form.get_by_role("button", name="Create token").click()
    secret = page.locator("#secret")
    expect(secret).not_to_be_empty(timeout=WAIT_MS)
    new_secret = secret.inner_text()
    row = page.locator("#tokens-table tbody tr", has_text=metric)
    expect(row).to_have_count(1)
    expect(row.locator("td").nth(2)).to_have_text("read write")
    expect(row.locator("td").nth(6)).to_have_text("active")
    with httpx.Client(base_url=stack.gateway_url, timeout=20) as http:
        assert http.get("/api/v1/labels", headers={"Authorization": f"Bearer {new_secret}"}).status_code == 200

        page.once("dialog", lambda dialog: dialog.accept())
        row.get_by_role("button", name="Revoke").click()
        expect(row.locator("td").nth(6)).to_have_text("revoked", timeout=WAIT_MS)
        expect(page.locator("#tokens-status")).to_have_text(f"revoked token {metric}")
        wait_until(
            lambda: http.get("/api/v1/labels", headers={"Authorization": f"Bearer {new_secret}"}).status_code == 401,
            "refused after revoking",
        )
    watched.assert_clean(token, new_secret)


def test_the_page_is_under_a_strict_policy_and_logout_forgets_the_token(watched: Watched, stack: Stack) -> None:
    page = watched.page
    response = page.goto("/ui")
    assert response is not None and response.status == 200
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'"
    assert "unsafe" not in policy
    token = sign_in_with_password(page, stack)

    # an inline script is refused by the browser under this policy
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if message.type == "error" else None)
    page.evaluate(
        "() => { const s = document.createElement('script');"
        " s.textContent = 'window.inlined = 1'; document.head.append(s); }"
    )
    assert page.evaluate("window.inlined") is None
    assert any("Content Security Policy" in text for text in refused)
    watched.errors.clear()  # the refusal above was the point

    # a password session renews its access token before it ends (here: marked as ending now)
    page.evaluate(
        "() => { const s = JSON.parse(sessionStorage.getItem('tsmesh.console.session'));"
        " s.expires = 0; sessionStorage.setItem('tsmesh.console.session', JSON.stringify(s)); }"
    )
    page.reload()
    expect(page.locator("#explore-view")).to_be_visible()
    renewed = page.evaluate("JSON.parse(sessionStorage.getItem('tsmesh.console.session'))")
    assert renewed["access"] != token and renewed["expires"] > 0
    answer = httpx.get(
        f"{stack.gateway_url}/api/v1/labels", headers={"Authorization": f"Bearer {renewed['access']}"}, timeout=20
    )
    assert answer.status_code == 200

    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-view")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0
    page.reload()
    expect(page.locator("#login-view")).to_be_visible()
    watched.assert_clean(token, renewed["access"])
