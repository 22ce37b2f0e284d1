"""Prometheus metrics of the ingest process (API side and writer side)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

POINTS_ACCEPTED = Counter("tsmesh_ingest_points_accepted_total", "Points accepted and acknowledged by Kafka")
POINTS_REJECTED = Counter("tsmesh_ingest_points_rejected_total", "Points refused by validation", ["reason"])
REQUESTS_LIMITED = Counter(
    "tsmesh_ingest_requests_limited_total", "Write requests refused by a per-tenant limit", ["limit"]
)
LIMITS_UNCHECKED = Counter(
    "tsmesh_ingest_limits_unchecked_total", "Active-series checks skipped because Redis was unreachable"
)
PRODUCE_SECONDS = Histogram(
    "tsmesh_ingest_produce_seconds",
    "Time from handing records to the producer until Kafka acknowledged them all",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
PRODUCE_FAILURES = Counter("tsmesh_ingest_produce_failures_total", "Writes refused as UNAVAILABLE", ["cause"])
LIVE_PUBLISH_FAILURES = Counter("tsmesh_ingest_live_publish_failures_total", "Live-feed publishes that failed")
CONSUMER_LAG = Gauge("tsmesh_ingest_consumer_lag_records", "Records behind the end of each partition", ["partition"])
BATCH_ROWS = Histogram(
    "tsmesh_ingest_writer_batch_rows",
    "Rows per writer transaction",
    buckets=(10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000, 250_000),
)
COPY_SECONDS = Histogram(
    "tsmesh_ingest_copy_seconds",
    "Duration of the points COPY (fast path or staging path) per transaction",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
COMMIT_SECONDS = Histogram(
    "tsmesh_ingest_writer_transaction_seconds",
    "Duration of a whole writer transaction (series, points, pending ranges, commit)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
CONFLICT_FALLBACKS = Counter(
    "tsmesh_ingest_writer_conflict_path_total", "Transactions that took the conflict-tolerant path"
)
DB_RETRIES = Counter("tsmesh_ingest_writer_db_retries_total", "Writer transactions retried after a database failure")
GENERATION_RETRIES = Counter(
    "tsmesh_ingest_writer_generation_retries_total", "Data generation bumps retried after a Redis failure"
)
DLQ_TOTAL = Counter("tsmesh_ingest_dlq_total", "Records sent to the dead-letter topic", ["reason"])
ROLLUP_LAG = Gauge(
    "tsmesh_ingest_rollup_refresh_lag_seconds", "Age of the oldest pending range consumed by the last refresh"
)
ROLLUP_PENDING = Gauge("tsmesh_ingest_rollup_pending_ranges", "Pending ranges left after the last refresh")
ROLLUP_SECONDS = Histogram(
    "tsmesh_ingest_rollup_refresh_seconds",
    "Duration of one rollup refresh transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
ROLLUP_COMMIT_LAG = Histogram(
    "tsmesh_ingest_rollup_commit_lag_seconds",
    "Per refresh: its commit time minus the insert time of the oldest pending range it consumed "
    "(inserted in the points' own transaction, so about that transaction's commit)",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0),
)
ROLLUP_BUCKETS = Counter(
    "tsmesh_ingest_rollup_buckets_total",
    "1m buckets updated, by path (merge: the writer merged a fast-path batch's partial aggregates; "
    "recompute: the refresher recomputed a pending bucket from raw)",
    ["path"],
)
