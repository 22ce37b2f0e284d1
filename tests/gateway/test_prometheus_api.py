"""The Prometheus HTTP API v1 against the requests Grafana's Prometheus data source sends.

Grafana does not install here (no Debian/PyPI/npm package), so its requests are rebuilt from its
data source (pkg/tsdb/prometheus and public/app/plugins/datasource/prometheus, Grafana 10/11):
the health check's buildinfo probe and an instant query ``1+1``; label names and label values
with ``match[]`` and ``start``/``end`` in Unix seconds; ``/api/v1/series``; ``query_range`` as a
form-encoded POST with the step already resolved (float seconds) and ``$__rate_interval`` already
substituted; instant queries for tables (``time`` in float seconds); ``/api/v1/metadata``.
Every answer is checked for the shape Grafana parses.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

FORM = {"content-type": "application/x-www-form-urlencoded", "user-agent": "Grafana/11.3.0"}


def _ok(answer: Any) -> Any:
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["status"] == "success"
    return body["data"]


async def test_buildinfo_probe_and_empty_endpoints(gateway) -> None:
    auth = gateway.bearer("read")
    info = _ok(await gateway.client.get("/api/v1/status/buildinfo", headers=auth))
    assert info["version"].split(".")[0] == "2"
    assert _ok(await gateway.client.get("/api/v1/rules", headers=auth)) == {"groups": []}
    assert _ok(await gateway.client.get("/api/v1/alerts", headers=auth)) == {"alerts": []}
    assert _ok(await gateway.client.get("/api/v1/metadata", headers=auth)) == {}
    assert _ok(await gateway.client.get("/api/v1/query_exemplars?query=up&start=1&end=2", headers=auth)) == []


async def test_query_range_post_with_resolved_step(gateway) -> None:
    form = "query=sum+by+%28job%29+%28rate%28up%5B1m0s%5D%29%29&start=1704067200&end=1704067500&step=60"
    answer = await gateway.client.post("/api/v1/query_range", content=form, headers={**FORM, **gateway.bearer("read")})
    data = _ok(answer)
    sent = gateway.mesh.query.prom_requests[-1]
    assert (sent.query, sent.start_ms, sent.end_ms, sent.step_ms) == (
        "sum by (job) (rate(up[1m0s]))",
        1_704_067_200_000,
        1_704_067_500_000,
        60_000,
    )
    assert data["resultType"] == "matrix"
    (series,) = data["result"]
    assert series["metric"] == {"tenant": gateway.tenant}
    assert series["values"][:2] == [[1704067200, "0.5"], [1704067260, "1.5"]]


async def test_query_range_get_with_rfc3339_and_duration_step(gateway) -> None:
    url = "/api/v1/query_range?query=up&start=2024-01-01T00:00:00Z&end=2024-01-01T00:10:00.5Z&step=1m30s&timeout=5s"
    _ok(await gateway.client.get(url, headers=gateway.bearer("read")))
    sent = gateway.mesh.query.prom_requests[-1]
    assert (sent.start_ms, sent.end_ms, sent.step_ms, sent.timeout_ms) == (
        1_704_067_200_000,
        1_704_067_800_500,
        90_000,
        5_000,
    )


async def test_instant_query_for_tables(gateway) -> None:
    form = "query=up&time=1704067200.5"
    data = _ok(await gateway.client.post("/api/v1/query", content=form, headers={**FORM, **gateway.bearer("read")}))
    assert data["resultType"] == "vector"
    (sample,) = data["result"]
    assert sample["metric"] == {"__name__": "up", "tenant": gateway.tenant}
    assert sample["value"] == [1704067200.5, "NaN"]
    scalar = _ok(await gateway.client.get("/api/v1/query?query=1&time=1704067200", headers=gateway.bearer("read")))
    assert scalar == {"resultType": "scalar", "result": [1704067200, "1"]}


async def test_labels_values_and_series_with_match(gateway) -> None:
    auth = gateway.bearer("read")
    names = _ok(await gateway.client.get("/api/v1/labels?start=1704067200&end=1704070800", headers=auth))
    assert names == ["__name__", "job"]
    query = "match%5B%5D=up%7Bjob%3D%22api%22%7D&start=1704067200&end=1704070800"
    values = _ok(await gateway.client.get(f"/api/v1/label/job/values?{query}", headers=auth))
    assert values == ["api", "web"]
    sent = gateway.mesh.query.prom_requests[-1]
    assert (sent.label, list(sent.match), sent.start_ms, sent.end_ms) == (
        "job",
        ['up{job="api"}'],
        1_704_067_200_000,
        1_704_070_800_000,
    )
    series = _ok(await gateway.client.post("/api/v1/series", content=query, headers={**FORM, **auth}))
    assert series == [{"__name__": "up", "job": "api"}]
    names_post = _ok(await gateway.client.post("/api/v1/labels", content=query, headers={**FORM, **auth}))
    assert names_post == ["__name__", "job"]
    assert list(gateway.mesh.query.prom_requests[-1].match) == ['up{job="api"}']


@pytest.mark.parametrize(
    ("url", "status", "error_type"),
    [
        ("/api/v1/query?query=refuse_bad_data", 400, "bad_data"),
        ("/api/v1/query?query=refuse_limit", 422, "execution"),
        ("/api/v1/query?query=refuse_execution", 422, "execution"),
        ("/api/v1/query?query=refuse_timeout", 503, "timeout"),
        ("/api/v1/query?query=up&time=yesterday", 400, "bad_data"),
        ("/api/v1/query_range?query=up&start=10&end=5&step=1", 400, "bad_data"),
        ("/api/v1/query_range?query=up&start=1&end=5&step=0", 400, "bad_data"),
        ("/api/v1/query_range?query=up&start=1&end=5&step=1x", 400, "bad_data"),
        ("/api/v1/query_range?query=up&start=0&end=100000&step=1", 400, "bad_data"),
        ("/api/v1/query_range?start=1&end=5&step=1", 400, "bad_data"),
        ("/api/v1/series", 400, "bad_data"),
        ("/api/v1/label/bad-name/values", 400, "bad_data"),
    ],
)
async def test_errors_use_prometheus_error_types(gateway, url: str, status: int, error_type: str) -> None:
    answer = await gateway.client.get(url, headers=gateway.bearer("read"))
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert (body["status"], body["errorType"]) == ("error", error_type)
    assert body["error"]


async def test_a_refused_query_names_the_parameter_as_prometheus_does(gateway) -> None:
    answer = await gateway.client.get("/api/v1/query?query=refuse_bad_data", headers=gateway.bearer("read"))
    assert answer.json()["error"] == 'invalid parameter "query": parse error: unexpected end of input'


async def test_without_a_token_the_answer_is_a_prometheus_error(gateway) -> None:
    answer = await gateway.client.get("/api/v1/labels")
    assert answer.status_code == 401
    assert answer.json()["status"] == "error"


def test_values_are_written_as_go_does() -> None:
    from tsmesh_gateway.routes.prometheus import format_value

    assert [format_value(v) for v in (1.0, 0.1, 1e21, 1.5e-7, -2.0, math.inf, -math.inf, math.nan)] == [
        "1",
        "0.1",
        "1000000000000000000000",
        "0.00000015",
        "-2",
        "+Inf",
        "-Inf",
        "NaN",
    ]
