"""Real push clients against a private stack: the OpenTelemetry Python SDK's OTLP/HTTP (gateway) and
OTLP/gRPC (ingest) exporters, Debian's Prometheus scraping the gateway and remote-writing into it,
and an InfluxDB 1.x ``/write``; every series is read back through the query API."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from devstack import Stack
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from stack_config import free_ports
from stackkit import api_token

pytestmark = pytest.mark.e2e

Labels = dict[str, str]


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    """An API token with scopes read and write."""
    return api_token(stack, "push")


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
    target = stack.metrics_url("gateway").removeprefix("http://").removesuffix("/metrics")  # the internal port
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


def start_prometheus(folder: Path) -> subprocess.Popen[bytes]:
    """Debian's Prometheus on ``folder/prometheus.yml``, a free port, its log in ``folder``."""
    (port,) = free_ports(1)
    args = [
        "prometheus",
        f"--config.file={folder / 'prometheus.yml'}",
        f"--storage.tsdb.path={folder / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with open(folder / "prometheus.log", "w") as log:
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
