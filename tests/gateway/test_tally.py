"""Hot-path metric tallies: nothing reaches Prometheus until a flush, then exactly what observe() would add."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from tsmesh_gateway import tally
from tsmesh_gateway.tally import TallyCounter, TallyHistogram

BUCKETS = (0.001, 0.01, 0.1)


def test_tallies_reach_their_metrics_on_flush_as_observe_would() -> None:
    registry = CollectorRegistry()
    counter = Counter("t_requests_total", "r", ["c"], registry=registry)
    histogram = Histogram("t_seconds", "s", ["c"], buckets=BUCKETS, registry=registry)
    reference = Histogram("t_reference_seconds", "s", ["c"], buckets=BUCKETS, registry=registry)
    hits = TallyCounter(counter.labels("q"))
    latency = TallyHistogram(histogram.labels("q"), BUCKETS)
    values = [0.0005, 0.001, 0.002, 0.01, 0.05, 0.5, 3.0]
    for value in values:
        hits.n += 1
        latency.observe(value)
        reference.labels("q").observe(value)
    assert registry.get_sample_value("t_requests_total", {"c": "q"}) == 0.0
    assert registry.get_sample_value("t_seconds_count", {"c": "q"}) == 0.0
    tally.flush()
    assert registry.get_sample_value("t_requests_total", {"c": "q"}) == len(values)
    for le in ("0.001", "0.01", "0.1", "+Inf"):
        assert registry.get_sample_value("t_seconds_bucket", {"c": "q", "le": le}) == registry.get_sample_value(
            "t_reference_seconds_bucket", {"c": "q", "le": le}
        )
    assert registry.get_sample_value("t_seconds_sum", {"c": "q"}) == sum(values)
    tally.flush()  # nothing twice
    assert registry.get_sample_value("t_requests_total", {"c": "q"}) == len(values)
    assert registry.get_sample_value("t_seconds_count", {"c": "q"}) == len(values)


async def test_fast_path_requests_are_counted_by_the_next_scrape(gateway) -> None:
    metric = 'tsmesh_gateway_http_requests_total{route_class="query",status="200"}'

    def count(text: str) -> float:
        return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(metric)), 0.0)

    before = count(gateway.internal.get("/metrics").text)
    body = {"selector": {"metric": "cpu"}, "start_ns": 0, "end_ns": 10**12}
    for _ in range(3):
        answer = await gateway.client.post("/v1/query/range", json=body, headers=gateway.bearer("read"))
        assert answer.status_code == 200
    assert count(gateway.internal.get("/metrics").text) == before + 3
