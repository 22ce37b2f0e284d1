"""Grafana's path through the real mesh: points written through the gateway, read back through
the gateway's Prometheus API (PromQL evaluated by the query service), tenant from the token."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from devstack import DEMO_EMAIL, DEMO_TENANT, Stack
from stackkit import private_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with private_stack(tmp_path_factory.mktemp("prometheus-stack")) as running:
        yield running


async def test_written_points_answer_promql_through_the_gateway(stack: Stack) -> None:
    metric = f"e2e_prom_{uuid.uuid4().hex[:8]}"
    now_s = int(time.time())
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=20) as http:
        login = await http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
        points = [
            {"metric": metric, "labels": {"host": host}, "timestamp_ns": (now_s - 60 + k * 15) * 10**9, "value": v * k}
            for host, v in (("a", 1.0), ("b", 2.0))
            for k in range(5)
        ]
        written = await http.post("/v1/write", json={"points": points}, headers=auth)
        assert written.status_code == 200, written.text

        form = {"query": f"sum by (host) ({metric})", "start": str(now_s - 30), "end": str(now_s), "step": "15"}
        deadline = time.monotonic() + 30
        while True:
            answer = await http.post("/api/v1/query_range", data=form, headers=auth)
            assert answer.status_code == 200, answer.text
            result = answer.json()["data"]["result"]
            if len(result) == 2 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert answer.json()["data"]["resultType"] == "matrix"
        by_host = {s["metric"]["host"]: s["values"] for s in result}
        assert by_host["a"][-1] == [now_s, "4"]
        assert by_host["b"][-1] == [now_s, "8"]

        names = await http.get("/api/v1/label/__name__/values", params={"match[]": f"{metric}"}, headers=auth)
        assert names.json() == {"status": "success", "data": [metric]}
        bad = await http.get("/api/v1/query", params={"query": f"sum({metric}"}, headers=auth)
        assert (bad.status_code, bad.json()["errorType"]) == (400, "bad_data")
        refused = await http.get("/api/v1/query", params={"query": metric})
        assert refused.status_code == 401
