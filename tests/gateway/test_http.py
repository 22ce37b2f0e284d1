"""The HTTP layer in process: request ids, security headers, error mapping, write and query
translation, the micro-cache, rate limits, CORS, gzip, limits on bodies, docs and metrics."""

from __future__ import annotations

import gzip

import grpc
import orjson
import pytest
from throwaway import free_port

from tsmesh_gateway.http_errors import http_status

RANGE = {
    "selector": {"metric": "cpu", "matchers": [{"name": "host", "op": "=", "value": "a"}]},
    "start_ns": 0,
    "end_ns": 10**12,
    "step_ns": 10**9,
    "aggregation": "avg",
}


async def test_every_response_has_request_id_and_security_headers(gateway) -> None:
    answer = await gateway.client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert answer.status_code == 200
    assert answer.headers["x-request-id"] == "abc-123"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in answer.headers
    bad = await gateway.client.get("/nope", headers={"x-request-id": "bad id with spaces"})
    assert bad.status_code == 404
    assert bad.headers["x-request-id"] != "bad id with spaces" and len(bad.headers["x-request-id"]) == 32


def test_grpc_codes_map_to_http_statuses() -> None:
    expected = {
        grpc.StatusCode.INVALID_ARGUMENT: 400,
        grpc.StatusCode.UNAUTHENTICATED: 401,
        grpc.StatusCode.PERMISSION_DENIED: 403,
        grpc.StatusCode.NOT_FOUND: 404,
        grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
        grpc.StatusCode.UNAVAILABLE: 503,
        grpc.StatusCode.DEADLINE_EXCEEDED: 504,
        grpc.StatusCode.INTERNAL: 500,
    }
    assert {code: http_status(code) for code in expected} == expected


@pytest.mark.parametrize(
    ("email", "status", "code"),
    [
        ("invalid@x", 400, "INVALID_ARGUMENT"),
        ("ok@x", 401, "UNAUTHENTICATED"),
        ("denied@x", 403, "PERMISSION_DENIED"),
        ("missing@x", 404, "NOT_FOUND"),
        ("limited@x", 429, "RESOURCE_EXHAUSTED"),
        ("unavailable@x", 503, "UNAVAILABLE"),
        ("deadline@x", 504, "DEADLINE_EXCEEDED"),
    ],
)
async def test_upstream_errors_map_to_http_with_json_body(gateway, email: str, status: int, code: str) -> None:
    answer = await gateway.client.post(
        "/v1/auth/login", json={"tenant": "t", "email": email, "password": "wrong"}, headers={"x-request-id": "r-1"}
    )
    assert answer.status_code == status
    body = answer.json()
    assert body["code"] == code
    assert body["request_id"] == "r-1" and body["message"]
    assert isinstance(body["details"], dict)
    if status == 400:
        assert body["details"]["field"] == "email"
    if status == 429:
        assert answer.headers["retry-after"] == "8"
        assert body["details"]["limit"] == "login_attempts"


async def test_a_slow_upstream_hits_the_deadline(gateway_factory) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_DEADLINE_SECONDS="0.2")
    answer = await gw.client.post("/v1/auth/login", json={"tenant": "t", "email": "slow@x", "password": "pw"})
    assert answer.status_code == 504
    assert answer.json()["code"] == "DEADLINE_EXCEEDED"


async def test_upstream_down_is_503_then_the_breaker_opens(gateway_factory) -> None:
    dead = free_port()
    gw = await gateway_factory(TSMESH_INGEST_ADDR=f"127.0.0.1:{dead}", TSMESH_GATEWAY_BREAKER_FAILURES="2")
    messages = []
    for _ in range(3):
        answer = await gw.client.post(
            "/v1/write", json={"points": [{"metric": "m", "timestamp_ns": 1, "value": 1}]}, headers=gw.bearer()
        )
        assert answer.status_code == 503
        messages.append(answer.json()["message"])
    assert "circuit open" in messages[-1]
    # one upstream down degrades the gateway, it does not take it out of the load balancer (ADR 0454)
    ready = await gw.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {
        "status": "degraded",
        "upstreams": {"auth": True, "ingest": False, "query": True},
        "degraded": ["ingest"],
    }


async def test_writes_keep_working_and_the_gateway_stays_ready_while_query_is_down(gateway_factory) -> None:
    gw = await gateway_factory(TSMESH_QUERY_ADDR=f"127.0.0.1:{free_port()}")
    ready = await gw.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["degraded"] == ["query"]
    write = await gw.client.post(
        "/v1/write", json={"points": [{"metric": "m", "timestamp_ns": 1, "value": 1}]}, headers=gw.bearer()
    )
    assert write.status_code == 200


async def test_readyz_when_every_upstream_serves(gateway) -> None:
    answer = await gateway.client.get("/readyz")
    assert answer.status_code == 200
    assert answer.json() == {
        "status": "ready",
        "upstreams": {"auth": True, "ingest": True, "query": True},
        "degraded": [],
    }


async def test_json_write_reaches_ingest_as_the_token_tenant_with_request_id(gateway, mesh) -> None:
    points = [
        {"metric": "cpu", "labels": {"host": "a"}, "timestamp_ns": 10**18, "value": 1.5},
        {"metric": "reject_me", "timestamp_ns": 1, "value": 2},
    ]
    answer = await gateway.client.post(
        "/v1/write",
        json={"points": points, "tenant": "someone-else"},
        headers={**gateway.bearer(), "x-request-id": "req-write"},
    )
    assert answer.status_code == 200
    assert answer.json() == {
        "accepted": 1,
        "rejected": 1,
        "errors": [{"index": 1, "field": "metric", "reason": "refused by test"}],
    }
    stored = mesh.ingest.points[gateway.tenant]
    assert [(p.metric, dict(p.labels), p.timestamp_ns, p.value) for p in stored] == [
        ("cpu", {"host": "a"}, 10**18, 1.5)
    ]
    assert mesh.ingest.metadata[-1]["x-request-id"] == "req-write"
    assert mesh.ingest.metadata[-1]["authorization"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"points": []}, "points"),
        ({"points": [{"metric": "", "timestamp_ns": 1, "value": 1}]}, "points[0].metric"),
        ({"points": [{"metric": "m", "timestamp_ns": "1", "value": 1}]}, "points[0].timestamp_ns"),
        ({"points": [{"metric": "m", "timestamp_ns": 1, "value": True}]}, "points[0].value"),
        ({"points": [{"metric": "m", "timestamp_ns": 1, "value": 1, "labels": {"a": 1}}]}, "points[0].labels.a"),
        ([1, 2], "body"),
    ],
)
async def test_bad_write_bodies_name_the_field(gateway, body: object, field: str) -> None:
    answer = await gateway.client.post("/v1/write", json=body, headers=gateway.bearer())
    assert answer.status_code == 400
    assert answer.json()["details"]["field"] == field


async def test_scope_and_authentication_are_checked(gateway) -> None:
    point = {"points": [{"metric": "m", "timestamp_ns": 1, "value": 1}]}
    assert (await gateway.client.post("/v1/write", json=point)).status_code == 401
    answer = await gateway.client.post("/v1/write", json=point, headers=gateway.bearer("read"))
    assert answer.status_code == 403
    expired = gateway.bearer(exp=1, iat=0)
    answer = await gateway.client.post("/v1/write", json=point, headers=expired)
    assert answer.status_code == 401 and answer.json()["message"] == "token expired"


async def test_body_limits_depth_gzip_and_encoding(gateway_factory) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_MAX_BODY_BYTES="2048", TSMESH_GATEWAY_MAX_JSON_DEPTH="4")
    auth = gw.bearer()
    big = {"points": [{"metric": "m" * 200, "timestamp_ns": 1, "value": 1}] * 20}
    assert (await gw.client.post("/v1/write", json=big, headers=auth)).status_code == 413
    deep = b'{"points": [[[[[[1]]]]]]}'
    answer = await gw.client.post("/v1/write", content=deep, headers={**auth, "content-type": "application/json"})
    assert answer.status_code == 400 and "deeper" in answer.json()["message"]
    bomb = gzip.compress(b"[" + b"0," * 100_000 + b"0]")
    answer = await gw.client.post("/v1/write", content=bomb, headers={**auth, "content-encoding": "gzip"})
    assert answer.status_code == 413
    ok = gzip.compress(orjson.dumps({"points": [{"metric": "m", "timestamp_ns": 1, "value": 1}]}))
    answer = await gw.client.post("/v1/write", content=ok, headers={**auth, "content-encoding": "gzip"})
    assert answer.status_code == 200 and answer.json()["accepted"] == 1
    answer = await gw.client.post("/v1/write", content=ok, headers={**auth, "content-encoding": "br"})
    assert answer.status_code == 415
    answer = await gw.client.post("/v1/write", content=b"{", headers=auth)
    assert answer.status_code == 400 and answer.json()["details"]["field"] == "body"


async def test_identical_queries_hit_the_micro_cache_until_the_generation_moves(gateway, mesh, redis_client) -> None:
    auth = gateway.bearer()
    before = mesh.query.calls.get("QueryRange", 0)
    first = await gateway.client.post("/v1/query/range", json=RANGE, headers=auth)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss"
    second = await gateway.client.post("/v1/query/range", json=RANGE, headers=auth)
    assert second.headers["x-cache"] == "hit" and second.json() == first.json()
    assert mesh.query.calls["QueryRange"] == before + 1
    await gateway.bump_generation(redis_client)
    third = await gateway.client.post("/v1/query/range", json=RANGE, headers=auth)
    assert third.headers["x-cache"] == "miss"
    assert mesh.query.calls["QueryRange"] == before + 2
    other = await gateway.client.post("/v1/query/range", json=RANGE, headers=gateway.bearer(tenant="t-other-tenant"))
    assert other.headers["x-cache"] == "miss"
    assert other.json()["series"][0]["labels"] == {"tenant": "t-other-tenant"}
    assert first.json()["series"][0]["labels"] == {"tenant": gateway.tenant}
    await redis_client.delete(gateway.ns.data_generation_key(gateway.tenant))


async def test_query_routes_translate(gateway) -> None:
    auth = gateway.bearer("read")
    sel = {"selector": {"metric": "cpu"}}
    latest = await gateway.client.post("/v1/query/latest", json=sel, headers=auth)
    assert latest.json() == {"points": [{"metric": "cpu", "labels": {}, "timestamp_ns": 5, "value": 1.0}]}
    series = await gateway.client.post("/v1/series", json={**sel, "limit": 10}, headers=auth)
    assert series.json() == {"series": [{"metric": "cpu", "labels": {"host": "a"}}]}
    values = await gateway.client.post("/v1/labels/values", json={"label": "host"}, headers=auth)
    assert values.json() == {"values": ["a", "b"]}
    missing = await gateway.client.post(
        "/v1/query/range", json={**RANGE, "selector": {"metric": "missing"}}, headers=auth
    )
    assert missing.status_code == 404
    bad = await gateway.client.post(
        "/v1/query/range", json={**RANGE, "selector": {"matchers": [{"op": "~"}]}}, headers=auth
    )
    assert bad.status_code == 400 and bad.json()["details"]["field"] == "selector.matchers[0].op"


async def test_rate_limit_headers_and_429(gateway_factory) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_LIMIT_QUERY="0.5:2")
    auth = gw.bearer("read")
    statuses = []
    for _ in range(3):
        answer = await gw.client.post("/v1/query/latest", json={"selector": {"metric": "cpu"}}, headers=auth)
        statuses.append(answer.status_code)
        assert answer.headers["ratelimit-limit"] == "2"
        assert "ratelimit-remaining" in answer.headers and "ratelimit-reset" in answer.headers
    assert statuses == [200, 200, 429]
    assert int(answer.headers["retry-after"]) >= 1
    assert answer.json()["code"] == "RESOURCE_EXHAUSTED"
    assert answer.json()["details"]["limit"] == "query_per_principal"


async def test_rate_limit_per_client_address(gateway_factory) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_LIMIT_AUTH_PER_ADDRESS="0.5:1")
    first = await gw.client.get("/.well-known/jwks.json")
    assert first.status_code == 200 and first.json()["keys"][0]["kty"] == "OKP"
    second = await gw.client.get("/.well-known/jwks.json")
    assert second.status_code == 429 and second.json()["details"]["limit"] == "auth_per_address"


async def test_cors_preflight_allows_listed_origins_only(gateway_factory) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_CORS_ORIGINS="https://app.example")
    preflight = {"access-control-request-method": "POST", "access-control-request-headers": "authorization"}
    ok = await gw.client.options("/v1/write", headers={"origin": "https://app.example", **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://app.example"
    assert ok.headers["access-control-allow-credentials"] == "true"
    assert "x-request-id" in ok.headers
    refused = await gw.client.options("/v1/write", headers={"origin": "https://evil.example", **preflight})
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers


def test_cors_wildcard_is_refused_by_config() -> None:
    from tsmesh_common.config import ConfigError
    from tsmesh_gateway.config import GatewayConfig

    with pytest.raises(ConfigError, match="TSMESH_GATEWAY_CORS_ORIGINS"):
        GatewayConfig.from_env({"TSMESH_GATEWAY_CORS_ORIGINS": "*"})


async def test_gzip_only_above_one_kilobyte(gateway) -> None:
    big = await gateway.client.get("/openapi.json", headers={"accept-encoding": "gzip"})
    assert big.headers["content-encoding"] == "gzip"
    assert big.json()["openapi"].startswith("3.")
    small = await gateway.client.get("/healthz", headers={"accept-encoding": "gzip"})
    assert "content-encoding" not in small.headers


async def test_auth_routes(gateway, mesh) -> None:
    login = await gateway.client.post("/v1/auth/login", json={"tenant": "acme", "email": "ok@x", "password": "pw"})
    assert login.status_code == 200
    tokens = login.json()
    assert tokens["token_type"] == "Bearer" and tokens["refresh_token"] == "r-acme"
    refreshed = await gateway.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200 and refreshed.json()["access_token"]
    assert (await gateway.client.post("/v1/auth/logout", json={"refresh_token": "r-acme"})).status_code == 204
    admin = gateway.bearer("admin")
    created = await gateway.client.post("/v1/tokens", json={"name": "ci", "scopes": ["write"]}, headers=admin)
    assert created.status_code == 201
    secret, token_id = created.json()["secret"], created.json()["token"]["id"]
    assert secret.startswith("tsm_") and mesh.auth.created[-1].name == "ci"
    listed = await gateway.client.get("/v1/tokens", headers=admin)
    assert token_id in [t["id"] for t in listed.json()["tokens"]]
    rotated = await gateway.client.post(f"/v1/tokens/{token_id}/rotate", json={"grace_seconds": 5}, headers=admin)
    assert rotated.status_code == 200 and rotated.json()["secret"] != secret
    revoked = await gateway.client.delete(f"/v1/tokens/{token_id}", headers=admin)
    assert revoked.json()["token"]["revoked"] is True
    assert (await gateway.client.delete("/v1/tokens/nope", headers=admin)).status_code == 404
    denied = await gateway.client.get("/v1/tokens", headers=gateway.bearer("read"))
    assert denied.status_code == 403
    bad = await gateway.client.post("/v1/tokens", json={"name": "x", "scopes": ["root"]}, headers=admin)
    assert bad.status_code == 400 and bad.json()["details"]["field"] == "scopes"


async def test_docs_are_served_locally_and_metrics_count_requests(gateway) -> None:
    assert (await gateway.client.get("/healthz")).status_code == 200
    docs = await gateway.client.get("/docs")
    assert docs.status_code == 200
    assert "/docs/static/swagger-ui-bundle.js" in docs.text and "//cdn" not in docs.text and "<script>" not in docs.text
    bundle = await gateway.client.get("/docs/static/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.content) > 100_000
    assert (await gateway.client.get("/openapi.json")).json()["openapi"].startswith("3.")
    metrics = gateway.internal.get("/metrics")
    assert 'tsmesh_gateway_http_requests_total{route_class="other",status="200"}' in metrics.text


async def test_metrics_are_not_on_the_public_port(gateway) -> None:
    assert (await gateway.client.get("/metrics")).status_code == 404
    assert gateway.internal.get("/metrics").status_code == 200
    assert gateway.internal.get("/docs").status_code == 404  # the docs stay public: Try it out calls the API


async def test_docs_can_be_switched_off_and_the_api_still_answers(gateway_factory) -> None:
    """TSMESH_GATEWAY_DOCS=false (the production overlay): no API description, everything else alike."""
    gateway = await gateway_factory(TSMESH_GATEWAY_DOCS="false")
    for path in ("/docs", "/docs/init.js", "/docs/static/swagger-ui-bundle.js", "/openapi.json"):
        assert (await gateway.client.get(path)).status_code == 404, path
    assert (await gateway.client.get("/healthz")).status_code == 200
    assert (await gateway.client.get("/readyz")).status_code == 200
    assert (await gateway.client.get("/ui")).status_code == 200
