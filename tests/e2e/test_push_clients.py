"""Real push clients against a private stack: the OpenTelemetry Python SDK's OTLP/HTTP (gateway) and
OTLP/gRPC (ingest) exporters, Debian's Prometheus scraping the gateway and remote-writing into it,
and an InfluxDB 1.x ``/write``; every series is read back through the query API."""

from __future__ import annotations

import asyncio
import json
import math
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from devstack import DEMO_EMAIL, DEMO_TENANT, Stack
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from stack_config import ROOT, free_ports
from stackkit import private_stack

pytestmark = pytest.mark.e2e

Labels = dict[str, str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with private_stack(tmp_path_factory.mktemp("push-stack")) as running:
        yield running


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    """An API token with scopes read and write."""
    with httpx.Client(base_url=stack.gateway_url, timeout=20) as http:
        login = http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        assert login.status_code == 200, login.text
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = http.post("/v1/tokens", json={"name": "push", "scopes": ["read", "write"]}, headers=session)
        assert created.status_code == 201, created.text
        secret: str = created.json()["secret"]
        return secret


async def latest(stack: Stack, token: str, metric: str, want: int = 1, timeout: float = 30.0) -> list[dict[str, Any]]:
    """The latest point of each series of ``metric``, once at least ``want`` series are there."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        while True:
            answer = await http.post(
                "/v1/query/latest", json={"selector": {"metric": metric}}, headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 200, answer.text
            points: list[dict[str, Any]] = answer.json()["points"]
            if len(points) >= want or time.monotonic() > deadline:
                return points
            await asyncio.sleep(0.2)


def by_labels(points: list[dict[str, Any]], *drop: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {tuple(sorted((k, v) for k, v in p["labels"].items() if k not in drop)): float(p["value"]) for p in points}


def record(exporter: MetricExporter, service: str, prefix: str) -> None:
    """A counter, a histogram and an up-down counter, exported once by the SDK."""
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=Resource.create({"service.name": service, "service.instance.id": "pod-1"}), metric_readers=[reader]
    )
    meter = provider.get_meter("e2e")
    meter.create_counter(f"{prefix}.requests", unit="1").add(5, {"route": "/a"})
    latency = meter.create_histogram(f"{prefix}.latency", unit="ms")
    latency.record(3)
    latency.record(30)
    depth = meter.create_up_down_counter(f"{prefix}.queue.depth")
    depth.add(7)
    depth.add(-3)
    assert provider.force_flush(10_000)
    provider.shutdown()


async def check_sdk_series(stack: Stack, token: str, service: str, prefix: str) -> None:
    job = (("instance", "pod-1"), ("job", service))
    counter = await latest(stack, token, f"{prefix}_requests_total")
    assert by_labels(counter) == {(*job, ("route", "/a")): 5.0}
    buckets = by_labels(await latest(stack, token, f"{prefix}_latency_milliseconds_bucket", want=16))
    assert buckets[(*job, ("le", "5"))] == 1.0
    assert buckets[(*job, ("le", "50"))] == 2.0
    assert buckets[(*job, ("le", "+Inf"))] == 2.0
    assert by_labels(await latest(stack, token, f"{prefix}_latency_milliseconds_sum")) == {job: 33.0}
    assert by_labels(await latest(stack, token, f"{prefix}_latency_milliseconds_count")) == {job: 2.0}
    assert by_labels(await latest(stack, token, f"{prefix}_queue_depth")) == {job: 4.0}


async def test_otel_sdk_otlp_http_exporter_through_the_gateway(stack: Stack, token: str) -> None:
    prefix = f"e2e_http_{uuid.uuid4().hex[:8]}"
    exporter = HttpExporter(
        endpoint=f"{stack.gateway_url}/otlp/v1/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    await asyncio.to_thread(record, exporter, "shop-http", prefix)
    await check_sdk_series(stack, token, "shop-http", prefix)


async def test_otel_sdk_otlp_grpc_exporter_to_ingest(stack: Stack, token: str) -> None:
    prefix = f"e2e_grpc_{uuid.uuid4().hex[:8]}"
    exporter = GrpcExporter(
        endpoint=stack.grpc_addr("ingest"), insecure=True, headers=(("authorization", f"Bearer {token}"),), timeout=10
    )
    await asyncio.to_thread(record, exporter, "shop-grpc", prefix)
    await check_sdk_series(stack, token, "shop-grpc", prefix)


async def test_influx_v1_write(stack: Stack, token: str) -> None:
    measurement = f"e2e_v1_{uuid.uuid4().hex[:8]}"
    body = f"{measurement},host=a used=42i {int(time.time())}\n"
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as http:
        answer = await http.post(
            "/write",
            params={"db": "telegraf", "precision": "s"},
            content=body,
            headers={"Authorization": f"Token {token}"},
        )
    assert answer.status_code == 204, answer.text
    assert by_labels(await latest(stack, token, f"{measurement}_used")) == {
        (("bucket", "telegraf"), ("host", "a")): 42.0
    }


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is installed by `make tools`")
async def test_prometheus_scrapes_the_gateway_and_remote_writes_into_tsmesh(
    stack: Stack, token: str, tmp_path: Path
) -> None:
    target = stack.gateway_url.removeprefix("http://")
    job = f"tsmesh-gateway-{uuid.uuid4().hex[:6]}"
    (tmp_path / "token").write_text(token)
    (tmp_path / "prometheus.yml").write_text(
        f"""
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: {job}
    static_configs:
      - targets: ["{target}"]
remote_write:
  - url: {stack.gateway_url}/api/v1/write
    authorization:
      credentials_file: {tmp_path / "token"}
    queue_config:
      batch_send_deadline: 1s
"""
    )
    proc = start_prometheus(tmp_path)
    try:
        deadline = time.monotonic() + 60
        mine: list[dict[str, Any]] = []
        while not mine and time.monotonic() < deadline:
            mine = [p for p in await latest(stack, token, "up", timeout=1) if p["labels"].get("job") == job]
        assert mine, (tmp_path / "prometheus.log").read_text()[-3000:]
        assert by_labels(mine) == {(("instance", target), ("job", job)): 1.0}
        scraped = await latest(stack, token, "scrape_samples_scraped")
        assert any(p["labels"].get("job") == job and p["value"] > 0 for p in scraped)
    finally:
        proc.terminate()
        proc.wait(10)


def start_prometheus(folder: Path, port: int | None = None) -> subprocess.Popen[bytes]:
    """Debian's Prometheus on ``folder/prometheus.yml``, a free port, its log in ``folder``."""
    if port is None:
        (port,) = free_ports(1)
    args = [
        "prometheus",
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with open(folder / "prometheus.log", "w") as log:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)


def compose_prometheus_config(stack: Stack, folder: Path, prometheus_port: int) -> str:
    """deploy/prometheus/prometheus.yml, as docker-compose runs it, pointed at this stack: its
    targets, rules and remote_write (tsmesh monitoring itself), scraped every second."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    where = {
        "auth:9103": stack.metrics_url("auth"),
        "ingest:9101": stack.metrics_url("ingest"),
        "ingest-writer:9101": stack.metrics_url("ingest_writer"),
        "query:9102": stack.metrics_url("query"),
        "gateway:8080": stack.metrics_url("gateway"),
        "127.0.0.1:9090": f"http://127.0.0.1:{prometheus_port}/metrics",
    }
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            group["targets"] = [where[t].removeprefix("http://").removesuffix("/metrics") for t in group["targets"]]
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(ROOT / "deploy" / "prometheus" / pattern) for pattern in config["rule_files"]]
    (remote,) = config["remote_write"]
    assert remote["url"] == "http://gateway:8080/api/v1/write"
    remote["url"] = f"{stack.gateway_url}/api/v1/write"
    remote["authorization"]["credentials_file"] = str(folder / "token")
    remote.setdefault("queue_config", {})["batch_send_deadline"] = "1s"
    return yaml.safe_dump(config)


async def query_range(base: str, expr: str, start: float, end: float, headers: dict[str, str]) -> Any:
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        answer = await http.post(
            "/api/v1/query_range", data={"query": expr, "start": start, "end": end, "step": 2}, headers=headers
        )
    assert answer.status_code == 200, f"{expr}: {answer.text}"
    return answer.json()["data"]


async def remote_write_caught_up(prometheus: str, when: float, timeout: float = 60.0) -> None:
    """Wait until Prometheus has sent tsmesh every sample up to ``when`` (its own account of the
    highest timestamp its remote-write queue sent), however slow the machine is."""
    deadline = time.monotonic() + timeout
    query = {"query": "min(prometheus_remote_storage_queue_highest_sent_timestamp_seconds)"}
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as http:
        while True:
            result = (await http.get("/api/v1/query", params=query)).json()["data"]["result"]
            sent = float(result[0]["value"][1]) if result else 0.0
            if sent >= when:
                return
            assert time.monotonic() < deadline, f"remote_write sent up to {sent}, not {when}"
            await asyncio.sleep(0.5)


def series_values(data: Any) -> dict[tuple[tuple[str, str], ...], list[tuple[float, float]]]:
    return {tuple(sorted(s["metric"].items())): [(t, float(v)) for t, v in s["values"]] for s in data["result"]}


def same_values(a: list[tuple[float, float]], b: list[tuple[float, float]]) -> bool:
    """Equal timestamps, and values equal to 1e-9 relative (sums may add in another order), NaN == NaN."""
    return len(a) == len(b) and all(
        ta == tb and (va == vb or math.isclose(va, vb, rel_tol=1e-9) or (math.isnan(va) and math.isnan(vb)))
        for (ta, va), (tb, vb) in zip(a, b, strict=True)
    )


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus is installed by `make tools`")
async def test_every_dashboard_answers_the_same_through_tsmesh_as_through_prometheus(
    stack: Stack, token: str, tmp_path: Path
) -> None:
    """The compose Prometheus config, pointed at this stack, scrapes every service, evaluates the
    recording rules and remote-writes all of it into tsmesh (self-monitoring). Then every query of
    every provisioned Grafana dashboard answers through tsmesh's Prometheus API exactly what it
    answers through Prometheus itself, over the same window."""
    (port,) = free_ports(1)
    (tmp_path / "token").write_text(token)
    (tmp_path / "prometheus.yml").write_text(compose_prometheus_config(stack, tmp_path, port))
    proc = start_prometheus(tmp_path, port)
    try:
        started = time.time()
        # Some writes and queries for the panels to show (and for rate() to have two samples).
        await latest(stack, token, "up", timeout=30)
        await asyncio.sleep(max(0.0, started + 25 - time.time()))
        end = time.time() - 6
        start = end - 12
        await remote_write_caught_up(f"http://127.0.0.1:{port}", end + 5)
        tsmesh = {"Authorization": f"Bearer {token}"}
        exprs = sorted(
            {
                target["expr"]
                for board in (ROOT / "deploy" / "grafana" / "dashboards").glob("*.json")
                for panel in json.loads(board.read_text())["panels"]
                for target in panel.get("targets", [])
            }
        )
        assert len(exprs) >= 20
        differ: list[str] = []
        shown = 0
        for expr in exprs:
            want = series_values(await query_range(f"http://127.0.0.1:{port}", expr, start, end, {}))
            got = series_values(await query_range(stack.gateway_url, expr, start, end, tsmesh))
            shown += bool(want)
            if got.keys() != want.keys() or not all(same_values(want[k], got[k]) for k in want):
                key = next((k for k in want if not same_values(want[k], got.get(k, []))), next(iter(got), None))
                differ.append(f"{expr} {key}\n  prometheus: {want.get(key)}\n  tsmesh:     {got.get(key)}")
        assert differ == [], "\n".join(differ)
        assert shown >= len(exprs) // 2, f"only {shown} of {len(exprs)} panels had data in Prometheus"
    finally:
        proc.terminate()
        proc.wait(10)
