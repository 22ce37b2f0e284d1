"""The push routes end to end in process (fake ingest on a real gRPC server): remote_write 1.0/2.0,
OTLP/HTTP protobuf and JSON, InfluxDB v1 /write; their bounds and the 4xx naming each fault."""

from __future__ import annotations

import asyncio
import base64
import gc
import gzip
import time
from typing import Any

import cramjam
import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from prometheus import remote_pb2, types_pb2
from prometheus.write.v2 import types_pb2 as v2

pytestmark = pytest.mark.integration

NOW_MS = int(time.time() * 1000)
RW1 = {"content-type": "application/x-protobuf", "content-encoding": "snappy"}
RW2 = {"content-type": "application/x-protobuf;proto=io.prometheus.write.v2.Request", "content-encoding": "snappy"}


def snappy(data: bytes) -> bytes:
    return bytes(cramjam.snappy.compress_raw(data))


def rw1(*series: tuple[dict[str, str], float]) -> bytes:
    request = remote_pb2.WriteRequest(
        timeseries=[
            types_pb2.TimeSeries(
                labels=[types_pb2.Label(name=k, value=v) for k, v in sorted(labels.items())],
                samples=[types_pb2.Sample(value=value, timestamp=NOW_MS)],
            )
            for labels, value in series
        ]
    )
    return request.SerializeToString()


def stored(gw: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(p.metric, tuple(sorted(p.labels.items()))): p.value for p in gw.mesh.ingest.points.get(gw.tenant, [])}


def otlp_request(name: str = "jobs.done") -> ExportMetricsServiceRequest:
    point = m.NumberDataPoint(time_unix_nano=NOW_MS * 1_000_000, as_int=3)
    metric = m.Metric(
        name=name,
        sum=m.Sum(aggregation_temporality=m.AGGREGATION_TEMPORALITY_CUMULATIVE, is_monotonic=True, data_points=[point]),
    )
    return ExportMetricsServiceRequest(
        resource_metrics=[
            m.ResourceMetrics(
                resource={"attributes": [{"key": "service.name", "value": {"string_value": "svc"}}]},
                scope_metrics=[m.ScopeMetrics(metrics=[metric])],
            )
        ]
    )


async def test_remote_write_1_stores_samples_and_answers_204(gateway: Any) -> None:
    body = snappy(rw1(({"__name__": "up", "job": "node"}, 1.0), ({"__name__": "load", "job": "node"}, 0.5)))
    answer = await gateway.client.post("/api/v1/write", content=body, headers={**gateway.bearer(), **RW1})
    assert answer.status_code == 204, answer.text
    assert stored(gateway) == {("up", (("job", "node"),)): 1.0, ("load", (("job", "node"),)): 0.5}


async def test_remote_write_2_is_negotiated_by_content_type(gateway: Any) -> None:
    request = v2.Request(
        symbols=["", "__name__", "up", "job", "node"],
        timeseries=[v2.TimeSeries(labels_refs=[1, 2, 3, 4], samples=[v2.Sample(value=1.0, timestamp=NOW_MS)])],
    )
    body = snappy(request.SerializeToString())
    answer = await gateway.client.post("/api/v1/write", content=body, headers={**gateway.bearer(), **RW2})
    assert answer.status_code == 204, answer.text
    assert answer.headers["x-prometheus-remote-write-samples-written"] == "1"
    assert stored(gateway) == {("up", (("job", "node"),)): 1.0}


@pytest.mark.parametrize(
    ("headers", "body", "status", "fault"),
    [
        (RW1, b"\x05garbage", 400, "snappy"),
        (RW1, snappy(rw1(({"__name__": "up"}, 1.0))[:-4]), 400, "truncated or corrupt protobuf"),
        ({**RW1, "content-type": "application/json"}, b"{}", 415, "Content-Type"),
        ({**RW1, "content-type": "application/x-protobuf;proto=io.prometheus.write.v9.Request"}, b"", 415, "v9"),
        ({**RW1, "content-encoding": "gzip"}, b"", 415, "snappy"),
        (RW1, snappy(rw1(({"job": "x"}, 1.0))), 400, "__name__"),
    ],
)
async def test_remote_write_bad_input_is_4xx_naming_the_fault(
    gateway: Any, headers: dict[str, str], body: bytes, status: int, fault: str
) -> None:
    answer = await gateway.client.post("/api/v1/write", content=body, headers={**gateway.bearer(), **headers})
    assert answer.status_code == status, answer.text
    assert fault in answer.json()["message"]


async def test_remote_write_overload_is_retryable_429(gateway: Any) -> None:
    body = snappy(rw1(({"__name__": "overload_me"}, 1.0)))
    answer = await gateway.client.post("/api/v1/write", content=body, headers={**gateway.bearer(), **RW1})
    assert answer.status_code == 429


async def test_otlp_protobuf_json_and_gzip(gateway: Any) -> None:
    headers = {**gateway.bearer(), "content-type": "application/x-protobuf"}
    answer = await gateway.client.post("/otlp/v1/metrics", content=otlp_request().SerializeToString(), headers=headers)
    assert answer.status_code == 200, answer.text
    assert not ExportMetricsServiceResponse.FromString(answer.content).HasField("partial_success")
    as_json = json_format.MessageToJson(otlp_request("jobs.failed")).encode()
    headers = {**gateway.bearer(), "content-type": "application/json", "content-encoding": "gzip"}
    answer = await gateway.client.post("/otlp/v1/metrics", content=gzip.compress(as_json), headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    assert stored(gateway) == {
        ("jobs_done_total", (("job", "svc"),)): 3.0,
        ("jobs_failed_total", (("job", "svc"),)): 3.0,
    }


async def test_otlp_delta_sums_are_a_partial_success(gateway: Any) -> None:
    request = otlp_request()
    request.resource_metrics[0].scope_metrics[0].metrics[
        0
    ].sum.aggregation_temporality = m.AGGREGATION_TEMPORALITY_DELTA
    headers = {**gateway.bearer(), "content-type": "application/x-protobuf"}
    answer = await gateway.client.post("/otlp/v1/metrics", content=request.SerializeToString(), headers=headers)
    assert answer.status_code == 200
    partial = ExportMetricsServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_data_points == 1
    assert "delta temporality" in partial.error_message


@pytest.mark.parametrize(
    ("content_type", "body", "status", "fault"),
    [
        (
            "application/x-protobuf",
            ExportMetricsServiceRequest(
                resource_metrics=[m.ResourceMetrics(scope_metrics=[m.ScopeMetrics(metrics=[m.Metric(name="x")])])]
            ).SerializeToString(),
            400,
            "unknown metric type",
        ),
        ("application/x-protobuf", otlp_request().SerializeToString()[:-5], 400, "truncated or corrupt"),
        ("application/json", b"{not json", 400, "JSON"),
        ("application/json", b'"AAA"', 400, "not an object"),
        ("text/plain", b"", 415, "Content-Type"),
    ],
)
async def test_otlp_bad_input_is_4xx_naming_the_fault(
    gateway: Any, content_type: str, body: bytes, status: int, fault: str
) -> None:
    headers = {**gateway.bearer(), "content-type": content_type}
    answer = await gateway.client.post("/otlp/v1/metrics", content=body, headers=headers)
    assert answer.status_code == status, answer.text
    assert fault in answer.json()["message"]


async def test_influx_v1_write_uses_db_as_the_bucket(gateway: Any) -> None:
    body = f"cpu,host=a usage=2 {NOW_MS}\n".encode()
    answer = await gateway.client.post("/write?db=telegraf&precision=ms", content=body, headers=gateway.bearer())
    assert answer.status_code == 204, answer.text
    answer = await gateway.client.post(
        "/write?db=telegraf&rp=week&precision=ms", content=body, headers=gateway.bearer()
    )
    assert answer.status_code == 204, answer.text
    assert stored(gateway) == {
        ("cpu_usage", (("bucket", "telegraf"), ("host", "a"))): 2.0,
        ("cpu_usage", (("bucket", "telegraf/week"), ("host", "a"))): 2.0,
    }
    answer = await gateway.client.post("/write?precision=ms", content=body, headers=gateway.bearer())
    assert answer.status_code == 400
    assert answer.json()["details"]["field"] == "db"


async def test_more_points_than_the_cap_is_413(gateway_factory: Any) -> None:
    gw = await gateway_factory(TSMESH_GATEWAY_PUSH_MAX_POINTS="5")
    body = "".join(f"m,i={i} v=1 {NOW_MS}\n" for i in range(6)).encode()
    answer = await gw.client.post("/write?db=d&precision=ms", content=body, headers=gw.bearer())
    assert answer.status_code == 413
    assert "at most 5 points" in answer.json()["message"]
    snapped = snappy(rw1(*(({"__name__": "m", "i": str(i)}, 1.0) for i in range(6))))
    answer = await gw.client.post("/api/v1/write", content=snapped, headers={**gw.bearer(), **RW1})
    assert answer.status_code == 413


def otlp_deltas(size: int) -> bytes:
    """An OTLP body of about ``size`` bytes whose points are all refused (delta sums): the decode is the work."""
    points = [
        m.NumberDataPoint(attributes=[{"key": "host", "value": {"string_value": f"h{i}"}}], time_unix_nano=1, as_int=1)
        for i in range(5_000)
    ]
    metric = m.Metric(name="d", sum=m.Sum(aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA, data_points=points))
    one = m.ResourceMetrics(scope_metrics=[m.ScopeMetrics(metrics=[metric])])
    return ExportMetricsServiceRequest(resource_metrics=[one] * (size // one.ByteSize())).SerializeToString()


@pytest.mark.parametrize("kind", ["bad lines", "OTLP protobuf"])
async def test_a_10_mib_body_never_stalls_healthz(gateway: Any, kind: str) -> None:
    """A functional bound with a wide margin, not a benchmark: parsing runs in the parse process. A
    thread was not enough for protobuf: its decode holds the interpreter lock (45-250 ms measured).
    A first small push starts the worker's parse process, a once-per-worker cost, before the probe.
    The shared 2-core box alone sometimes delays one /healthz past the bound (ADR 0222: about one
    attempt in six at load 5), so up to three attempts are made: a parse that holds the loop stalls
    every attempt."""
    warm = await gateway.client.post("/write?db=d", content=b"warm v=1\n", headers=gateway.bearer())
    assert warm.status_code == 204
    line = b"this line is not line protocol at all, it has no fields\n"
    body = line * (10 * 1024 * 1024 // len(line)) if kind == "bad lines" else otlp_deltas(10 * 1024 * 1024)
    attempts = [await _worst_healthz_during(gateway, kind, body, line)]
    while attempts[-1] >= 0.05 and len(attempts) < 3:
        attempts.append(await _worst_healthz_during(gateway, kind, body, line))
    assert min(attempts) < 0.05, f"/healthz took {[round(w * 1000, 1) for w in attempts]} ms during the parse"


async def _worst_healthz_during(gateway: Any, kind: str, body: bytes, line: bytes) -> float:
    """The worst /healthz delay while ``body`` is pushed, after checking the push's answer."""
    gc.collect()  # the test session's own garbage: a full collection during the probe is not the parse
    worst = 0.0
    done = asyncio.Event()

    async def probe() -> None:
        nonlocal worst
        while not done.is_set():  # each round: a 5 ms pause, then /healthz; a stalled loop delays either
            started = time.perf_counter()
            await asyncio.sleep(0.005)
            answer = await gateway.client.get("/healthz")
            assert answer.status_code == 200
            worst = max(worst, time.perf_counter() - started - 0.005)

    prober = asyncio.create_task(probe())
    await asyncio.sleep(0.02)
    if kind == "bad lines":
        answer = await gateway.client.post("/write?db=d", content=body, headers=gateway.bearer())
    else:
        headers = {**gateway.bearer(), "content-type": "application/x-protobuf"}
        answer = await gateway.client.post("/otlp/v1/metrics", content=body, headers=headers)
    done.set()
    await prober
    if kind == "bad lines":
        assert answer.status_code == 400
        details = answer.json()["details"]
        assert details["bad_lines"] == len(body) // len(line)
        assert "line 1:" in answer.json()["message"]
    else:
        assert answer.status_code == 200, answer.text
        refused = ExportMetricsServiceResponse.FromString(answer.content).partial_success.rejected_data_points
        assert refused == 5_000 * len(ExportMetricsServiceRequest.FromString(body).resource_metrics)
    return worst


async def test_influx_v1_credentials_carry_the_token_as_password(gateway: Any) -> None:
    token = gateway.bearer()["authorization"].removeprefix("Bearer ")
    body = f"creds,via=basic v=1 {NOW_MS}\n".encode()
    basic = "Basic " + base64.b64encode(f"telegraf:{token}".encode()).decode()
    answer = await gateway.client.post("/write?db=d&precision=ms", content=body, headers={"authorization": basic})
    assert answer.status_code == 204, answer.text
    answer = await gateway.client.post("/write", params={"db": "d", "precision": "ms", "p": token}, content=body)
    assert answer.status_code == 204, answer.text
    wrong = "Basic " + base64.b64encode(b"telegraf:nope").decode()
    answer = await gateway.client.post("/write?db=d&precision=ms", content=body, headers={"authorization": wrong})
    assert answer.status_code == 401
    assert ("creds_v", (("bucket", "d"), ("via", "basic"))) in stored(gateway)
