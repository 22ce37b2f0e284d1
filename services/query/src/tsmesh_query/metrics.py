"""Prometheus metrics of the query service (``tsmesh_query_*``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CACHE_REQUESTS = Counter("tsmesh_query_cache_requests_total", "Result-cache lookups", ["layer", "result"])
CACHE_EVICTIONS = Counter("tsmesh_query_cache_evictions_total", "Result-cache entries evicted", ["layer", "reason"])
CACHE_BYTES = Gauge("tsmesh_query_cache_bytes", "Bytes held by the in-process result cache", ["layer"])
CACHE_ERRORS = Counter("tsmesh_query_cache_errors_total", "Failed shared-cache operations", ["layer"])
DB_FAILOVERS = Counter("tsmesh_query_db_failovers_total", "Reads moved off a failing database server", ["target"])
RESOLUTIONS = Counter("tsmesh_query_chunks_computed_total", "Chunks computed from the database", ["resolution"])
SINGLE_FLIGHT_SHARED = Counter(
    "tsmesh_query_singleflight_shared_total", "Calls answered by an identical in-flight call"
)
SUBSCRIBERS = Gauge("tsmesh_query_subscribers", "Open Subscribe streams")
SUBSCRIBERS_DROPPED = Counter("tsmesh_query_subscribers_dropped_total", "Subscribers dropped for falling behind")
LIVE_BATCHES = Counter("tsmesh_query_live_batches_total", "Live batches received from the shared feed")
LIVE_DELAY = Histogram(
    "tsmesh_query_live_delay_seconds",
    "From ingest acceptance to fan-out",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
)
