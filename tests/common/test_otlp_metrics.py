"""OTLP metrics become the series Prometheus's OTLP receiver would write."""

from __future__ import annotations

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2 as m
from tsmesh.v1 import ingest_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.otlp_metrics import translate
from tsmesh_common.otlp_names import float_text, label_name, metric_name
from tsmesh_common.otlp_view import view_of
from tsmesh_common.pointwire import IdentityCache, Outcome, RequestWriter

TS = 1_700_000_000_000_000_000
CUMULATIVE = m.AGGREGATION_TEMPORALITY_CUMULATIVE


def kv(key: str, value: str | int | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def request(*metrics: m.Metric, resource: list[KeyValue] | None = None) -> ExportMetricsServiceRequest:
    attrs = resource if resource is not None else [kv("service.name", "shop"), kv("service.instance.id", "i-1")]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            m.ResourceMetrics(
                resource={"attributes": attrs},
                scope_metrics=[m.ScopeMetrics(metrics=list(metrics))],
            )
        ]
    )


def points(
    req: ExportMetricsServiceRequest, cache: IdentityCache | None = None
) -> tuple[dict[tuple[str, tuple[tuple[str, str], ...]], float], Outcome]:
    writer = RequestWriter(max_points=3, max_total=1000)
    outcome = translate(view_of(req), writer, cache)
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for raw in writer.requests():
        for p in ingest_pb2.WriteRequest.FromString(raw).points:
            assert p.timestamp_ns == TS
            out[(p.metric, tuple(sorted(p.labels.items())))] = p.value
    return out, outcome


JOB = (("instance", "i-1"), ("job", "shop"))


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("http.server.duration", "s", "", "http_server_duration_seconds"),
        ("http.server.request.size", "By", "", "http_server_request_size_bytes"),
        ("cpu.utilization", "1", "gauge", "cpu_utilization_ratio"),
        ("requests", "1", "counter", "requests_total"),
        ("requests.total", "{request}", "counter", "requests_total"),
        ("network.io", "By/s", "gauge", "network_io_bytes_per_second"),
        ("latency_seconds", "s", "", "latency_seconds"),
        ("2xx", "", "", "_2xx"),
    ],
)
def test_metric_names_follow_prometheus(name: str, unit: str, kind: str, expected: str) -> None:
    assert metric_name(name, unit, gauge=kind == "gauge", counter=kind == "counter") == expected


def test_label_names_and_float_text() -> None:
    assert [label_name(k) for k in ("http.method", "2x", "_x", "__x")] == ["http_method", "key_2x", "key_x", "__x"]
    assert [float_text(v) for v in (0.5, 10.0, 1e21, 0.005, float("inf"))] == [
        "0.5",
        "10",
        "1000000000000000000000",
        "0.005",
        "+Inf",
    ]


def test_sums_gauges_histograms_summaries_and_target_info() -> None:
    attrs = [kv("http.method", "GET")]
    req = request(
        m.Metric(
            name="http.requests",
            unit="1",
            sum=m.Sum(
                aggregation_temporality=CUMULATIVE,
                is_monotonic=True,
                data_points=[m.NumberDataPoint(attributes=attrs, time_unix_nano=TS, as_int=7)],
            ),
        ),
        m.Metric(
            name="queue.depth",
            sum=m.Sum(
                aggregation_temporality=CUMULATIVE,
                is_monotonic=False,
                data_points=[m.NumberDataPoint(time_unix_nano=TS, as_double=-2.0)],
            ),
        ),
        m.Metric(
            name="temp", unit="Cel", gauge=m.Gauge(data_points=[m.NumberDataPoint(time_unix_nano=TS, as_double=21.5)])
        ),
        m.Metric(
            name="latency",
            unit="ms",
            histogram=m.Histogram(
                aggregation_temporality=CUMULATIVE,
                data_points=[
                    m.HistogramDataPoint(
                        time_unix_nano=TS, count=6, sum=42.0, explicit_bounds=[5.0, 10.0], bucket_counts=[1, 2, 3]
                    )
                ],
            ),
        ),
        m.Metric(
            name="rpc",
            unit="s",
            summary=m.Summary(
                data_points=[
                    m.SummaryDataPoint(
                        time_unix_nano=TS,
                        count=4,
                        sum=2.0,
                        quantile_values=[m.SummaryDataPoint.ValueAtQuantile(quantile=0.99, value=0.9)],
                    )
                ]
            ),
        ),
        resource=[
            kv("service.name", "shop"),
            kv("service.namespace", "eu"),
            kv("service.instance.id", "i-1"),
            kv("host.name", "h"),
        ],
    )
    got, outcome = points(req)
    job = (("instance", "i-1"), ("job", "eu/shop"))
    assert got == {
        ("http_requests_total", (("http_method", "GET"), *job)): 7.0,
        ("queue_depth", job): -2.0,
        ("temp_celsius", job): 21.5,
        ("latency_milliseconds_bucket", (*job, ("le", "10"))): 3.0,
        ("latency_milliseconds_bucket", (*job, ("le", "5"))): 1.0,
        ("latency_milliseconds_bucket", (*job, ("le", "+Inf"))): 6.0,
        ("latency_milliseconds_sum", job): 42.0,
        ("latency_milliseconds_count", job): 6.0,
        ("rpc_seconds", (*job, ("quantile", "0.99"))): 0.9,
        ("rpc_seconds_sum", job): 2.0,
        ("rpc_seconds_count", job): 4.0,
        ("target_info", (("host_name", "h"), *job)): 1.0,
    }
    assert outcome.rejected == 0


def test_identities_cached_across_requests_keep_each_resource_and_point_apart() -> None:
    cache = IdentityCache()
    attrs = [kv("code", 200), kv("ok", True), kv("path", "/a")]

    def export(service: str, *values: m.NumberDataPoint) -> m.Metric:
        return request(
            m.Metric(name="hits", gauge=m.Gauge(data_points=list(values))), resource=[kv("service.name", service)]
        )

    first, _ = points(export("a", m.NumberDataPoint(attributes=attrs, time_unix_nano=TS, as_int=0)), cache)
    second, _ = points(
        export(
            "b",
            m.NumberDataPoint(attributes=attrs, time_unix_nano=TS, as_double=2.5),
            m.NumberDataPoint(attributes=attrs[:1], time_unix_nano=TS, as_int=-3),
        ),
        cache,
    )

    def labels(job: str) -> tuple[tuple[str, str], ...]:
        return (("code", "200"), ("job", job), ("ok", "true"), ("path", "/a"))

    assert first == {("hits", labels("a")): 0.0}
    assert second == {("hits", labels("b")): 2.5, ("hits", (("code", "200"), ("job", "b"))): -3.0}


def test_a_histogram_without_a_sum_has_no_sum_series() -> None:
    point = m.HistogramDataPoint(time_unix_nano=TS, count=1, explicit_bounds=[1.0], bucket_counts=[1, 0])
    got, _ = points(
        request(m.Metric(name="d", histogram=m.Histogram(aggregation_temporality=CUMULATIVE, data_points=[point])))
    )
    assert sorted(metric for metric, _ in got) == ["d_bucket", "d_bucket", "d_count"]


def test_delta_and_exponential_histograms_are_refused_with_a_reason_and_stale_points_dropped() -> None:
    req = request(
        m.Metric(
            name="d",
            sum=m.Sum(
                aggregation_temporality=m.AGGREGATION_TEMPORALITY_DELTA,
                is_monotonic=True,
                data_points=[m.NumberDataPoint(time_unix_nano=TS, as_int=1)] * 2,
            ),
        ),
        m.Metric(
            name="e", exponential_histogram=m.ExponentialHistogram(data_points=[m.ExponentialHistogramDataPoint()])
        ),
        m.Metric(
            name="g",
            gauge=m.Gauge(
                data_points=[
                    m.NumberDataPoint(time_unix_nano=TS, as_double=1.0),
                    m.NumberDataPoint(time_unix_nano=TS + 1, flags=m.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK),
                ]
            ),
        ),
    )
    got, outcome = points(req)
    assert got == {("g", JOB): 1.0}
    assert outcome.rejected == 3
    assert outcome.stale == 1
    messages = " | ".join(outcome.messages)
    assert "delta temporality is not accepted" in messages
    assert "exponential histograms are not supported" in messages


def test_a_metric_without_a_data_type_refuses_the_request() -> None:
    with pytest.raises(InvalidArgument, match="unknown metric type"):
        points(request(m.Metric(name="mystery")))
