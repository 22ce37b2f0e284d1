"""``GET /v1/query/range`` (query-string form of the range query) on the fast path and on the
Starlette path, and gzip for large answers on the fast path."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

POST = {
    "selector": {"metric": "cpu", "matchers": [{"name": "host", "op": "=", "value": "a"}]},
    "start_ns": 0,
    "end_ns": 10**12,
    "step_ns": 10**9,
    "aggregation": "avg",
}
GET = [("metric", "cpu"), ("match", "host=a"), ("start_ns", 0), ("end_ns", 10**12), ("step_ns", 10**9)]


@pytest.mark.parametrize("fast", ["true", "false"], ids=["fast-path", "starlette"])
async def test_get_answers_like_post_and_is_cached_until_the_generation_moves(
    gateway_factory, mesh, redis_client, fast: str
) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_FAST_PATH=fast)
    auth = gw.bearer("read")
    url = "/v1/query/range?" + urlencode([*GET, ("aggregation", "avg")])
    before = mesh.query.calls.get("QueryRange", 0)
    first = await gw.client.get(url, headers=auth)
    assert first.status_code == 200, first.text
    assert first.headers["x-cache"] == "miss" and "ratelimit-remaining" in first.headers
    assert "x-request-id" in first.headers and first.headers["x-content-type-options"] == "nosniff"
    posted = await gw.client.post("/v1/query/range", json=POST, headers=auth)
    assert posted.json()["series"][0]["metric"] == first.json()["series"][0]["metric"] == "cpu"
    second = await gw.client.get(url, headers=auth)
    assert second.headers["x-cache"] == "hit" and second.json() == first.json()
    assert mesh.query.calls["QueryRange"] == before + 2  # the GET miss and the POST miss
    await gw.bump_generation(redis_client)
    third = await gw.client.get(url, headers=auth)
    assert third.headers["x-cache"] == "miss"
    await redis_client.delete(gw.ns.data_generation_key(gw.tenant))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ([("match", "host=a"), ("start_ns", 0), ("end_ns", 1)], "metric"),
        ([("metric", "cpu"), ("end_ns", 1)], "start_ns"),
        ([("metric", "cpu"), ("start_ns", "soon"), ("end_ns", 1)], "start_ns"),
        ([("metric", "cpu"), ("match", "host"), ("start_ns", 0), ("end_ns", 1)], "match"),
        ([("metric", "cpu"), ("metric", "mem"), ("start_ns", 0), ("end_ns", 1)], "metric"),
        ([("metric", "cpu"), ("start", 0), ("end_ns", 1)], "start"),
        ([("metric", "cpu"), ("start_ns", 0), ("end_ns", 1), ("aggregation", "median")], "aggregation"),
        (
            [("metric", "cpu"), *[("match", f"l{i}=v") for i in range(33)], ("start_ns", 0), ("end_ns", 1)],
            "match",
        ),
        # Checks shared with the JSON body name the parameter too, not the body's field.
        ([("metric", ""), ("start_ns", 0), ("end_ns", 1)], "metric"),
        ([("metric", "m" * 300), ("start_ns", 0), ("end_ns", 1)], "metric"),
        ([("metric", "cpu"), ("match", "a=1"), ("match", "b=" + "v" * 1100), ("start_ns", 0), ("end_ns", 1)], "match"),
    ],
)
async def test_bad_query_strings_name_the_parameter(gateway, params: list, field: str) -> None:
    answer = await gateway.client.get("/v1/query/range?" + urlencode(params), headers=gateway.bearer("read"))
    assert answer.status_code == 400, answer.text
    assert answer.json()["details"]["field"] == field


async def test_get_needs_read_scope_and_a_token(gateway) -> None:
    url = "/v1/query/range?" + urlencode(GET)
    assert (await gateway.client.get(url)).status_code == 401
    assert (await gateway.client.get(url, headers=gateway.bearer("write"))).status_code == 403


async def test_fast_path_gzips_large_answers_for_clients_that_accept_it(gateway) -> None:
    big_tenant = "t-" + "x" * 1200  # the fake query echoes the tenant: an answer over 1 KB
    for request in (
        gateway.client.build_request("GET", "/v1/query/range?" + urlencode(GET)),
        gateway.client.build_request("POST", "/v1/query/range", json=POST),
    ):
        request.headers.update({"accept-encoding": "gzip", **gateway.bearer("read", tenant=big_tenant)})
        answer = await gateway.client.send(request)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-encoding"] == "gzip" and answer.headers["vary"] == "Accept-Encoding"
        assert answer.json()["series"][0]["labels"]["tenant"] == big_tenant  # httpx inflated it
        assert int(answer.headers["content-length"]) < len(answer.content)  # sent compressed
    small = await gateway.client.get(
        "/v1/query/range?" + urlencode(GET), headers={"accept-encoding": "gzip", **gateway.bearer("read")}
    )
    assert small.status_code == 200 and "content-encoding" not in small.headers


@pytest.mark.parametrize("fast", ["true", "false"], ids=["fast-path", "starlette"])
async def test_gzip_is_cached_on_hits_and_q0_refuses_it(gateway_factory, monkeypatch, fast: str) -> None:
    from tsmesh_gateway import microcache

    compressed: list[int] = []
    real = microcache.gzip_body
    monkeypatch.setattr(microcache, "gzip_body", lambda body: compressed.append(len(body)) or real(body))
    gw = await gateway_factory(TSMESH_GATEWAY_FAST_PATH=fast)
    auth = gw.bearer("read", tenant="t-" + "y" * 1200)  # the fake query echoes the tenant: over 1 KB
    url = "/v1/query/range?" + urlencode(GET)
    for expected in ("miss", "hit", "hit"):
        answer = await gw.client.get(url, headers={"accept-encoding": "gzip, deflate", **auth})
        assert answer.headers["x-cache"] == expected and answer.headers["content-encoding"] == "gzip"
        assert answer.headers.get_list("vary") == ["Accept-Encoding"]
    assert len(compressed) == 1  # once, on the miss; the hits send the kept gzipped body
    for refused in ("gzip;q=0", "gzip; q=0.0, identity", "br, GZIP ; Q=0", "deflate;q=1, gzip;q=0"):
        answer = await gw.client.get(url, headers={"accept-encoding": refused, **auth})
        assert answer.status_code == 200 and answer.headers["x-cache"] == "hit"
        assert "content-encoding" not in answer.headers, refused
    weighted = await gw.client.get(url, headers={"accept-encoding": "br;q=1.0, gzip;q=0.5", **auth})
    assert weighted.headers["content-encoding"] == "gzip"
