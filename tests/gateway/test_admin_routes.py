"""``/v1/admin/...`` in front of fake upstreams that check the ``admin`` scope as the real ones do:
403 for read- or write-scoped tokens on every route, the shapes of the answers, the streamed export."""

from __future__ import annotations

import pytest

ADMIN_ROUTES = [
    ("GET", "/v1/admin/retention", None),
    ("PUT", "/v1/admin/retention", {"raw_days": 3}),
    ("POST", "/v1/admin/delete", {"selector": {"metric": "m"}, "start_ns": 1, "end_ns": 2}),
    ("POST", "/v1/admin/export?format=jsonl", {"selector": {"metric": "m"}, "start_ns": 1, "end_ns": 2}),
    ("GET", "/v1/admin/export?format=csv&metric=m&start_ns=1&end_ns=2", None),
    ("GET", "/v1/admin/cardinality", None),
]


@pytest.mark.parametrize("scopes", ["read", "write", "read write"])
async def test_every_admin_route_refuses_read_and_write_tokens(gateway, scopes: str) -> None:
    for method, path, body in ADMIN_ROUTES:
        answer = await gateway.client.request(method, path, json=body, headers=gateway.bearer(scopes))
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["code"] == "PERMISSION_DENIED"


async def test_admin_routes_answer_an_admin(gateway) -> None:
    admin = gateway.bearer("admin")
    got = await gateway.client.get("/v1/admin/retention", headers=admin)
    assert got.json() == {
        "raw_days": None,
        "rollup_1m_days": None,
        "rollup_1h_days": None,
        "defaults": {"raw_days": 7, "rollup_1m_days": 30, "rollup_1h_days": 365},
    }
    put = await gateway.client.put("/v1/admin/retention", json={"raw_days": 3, "rollup_1h_days": None}, headers=admin)
    assert put.status_code == 200 and put.json()["raw_days"] == 3
    bad = await gateway.client.put("/v1/admin/retention", json={"raw_days": -1}, headers=admin)
    assert bad.status_code == 400 and bad.json()["details"]["field"] == "raw_days"
    unknown = await gateway.client.put("/v1/admin/retention", json={"forever": 1}, headers=admin)
    assert unknown.status_code == 400
    export = await gateway.client.post(
        "/v1/admin/export?format=jsonl", json={"selector": {"metric": "m"}, "start_ns": 1, "end_ns": 2}, headers=admin
    )
    assert export.status_code == 200 and export.text == '{"n":1}\n{"n":2}\n'
    assert export.headers["content-type"].startswith("application/x-ndjson")
    wrong = await gateway.client.get("/v1/admin/export?format=xml&metric=m&start_ns=1&end_ns=2", headers=admin)
    assert wrong.status_code == 400
    card = await gateway.client.get("/v1/admin/cardinality?limit=5", headers=admin)
    assert card.json()["max_active_series"] == 1000
    spec = (await gateway.client.get("/openapi.json")).json()
    assert {"/v1/admin/retention", "/v1/admin/delete", "/v1/admin/export", "/v1/admin/cardinality"} <= set(
        spec["paths"]
    )
