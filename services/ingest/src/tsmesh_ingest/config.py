"""Configuration of the ingest process, read once from the environment (see docs in each field group)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson

from tsmesh_common.config import CommonConfig, ConfigError, Env
from tsmesh_common.redis_keys import LATE_WRITE_SECONDS
from tsmesh_ingest.kafka_security import KafkaSecurity
from tsmesh_ingest.limits import TenantLimits, ValidationLimits

MODES = ("all", "api", "writer")


@dataclass(frozen=True)
class KafkaConfig:
    """Broker, topics and producer settings. Idempotence must be on with Apache Kafka in production."""

    bootstrap: str
    topic: str
    dlq_topic: str
    partitions: int
    replication: int
    idempotence: bool
    request_timeout_ms: int
    linger_ms: int
    max_inflight_bytes: int
    group: str
    session_timeout_ms: int
    min_insync_replicas: int = 1
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    @classmethod
    def from_env(cls, env: Env) -> KafkaConfig:
        return cls(
            bootstrap=env.get_str("TSMESH_KAFKA_BOOTSTRAP", "127.0.0.1:9092"),
            topic=env.get_str("TSMESH_KAFKA_TOPIC", "tsmesh.points.v1"),
            dlq_topic=env.get_str("TSMESH_KAFKA_DLQ_TOPIC", "tsmesh.points.dlq.v1"),
            partitions=env.get_int("TSMESH_KAFKA_PARTITIONS", 4, minimum=1, maximum=4096),
            replication=env.get_int("TSMESH_KAFKA_REPLICATION", 1, minimum=1, maximum=16),
            idempotence=env.get_bool("TSMESH_KAFKA_IDEMPOTENCE", env.production),
            request_timeout_ms=env.get_int("TSMESH_KAFKA_REQUEST_TIMEOUT_MS", 5000, minimum=100),
            linger_ms=env.get_int("TSMESH_KAFKA_LINGER_MS", 1, minimum=0, maximum=1000),
            max_inflight_bytes=env.get_int("TSMESH_KAFKA_MAX_INFLIGHT_BYTES", 64 * 1024 * 1024, minimum=1024),
            group=env.get_str("TSMESH_KAFKA_GROUP", "tsmesh-ingest-writer"),
            session_timeout_ms=env.get_int("TSMESH_KAFKA_SESSION_TIMEOUT_MS", 10_000, minimum=1000),
            min_insync_replicas=env.get_int("TSMESH_KAFKA_MIN_INSYNC_REPLICAS", 1, minimum=1, maximum=16),
            security=KafkaSecurity.from_env(env),
        )


@dataclass(frozen=True)
class WriterConfig:
    """Adaptive batching bounds of the writer and the rollup/retention/partition maintenance cadence."""

    min_rows: int
    max_rows: int
    max_wait_ms: int
    linger_ms: int
    pool_size: int
    retry_max_seconds: float
    rollup_interval_ms: int
    rollup_batch: int
    raw_days: int
    rollup_1m_days: int
    rollup_1h_days: int
    partitions_ahead_days: int
    maintenance_interval_s: float
    late_window_s: int = LATE_WRITE_SECONDS

    @classmethod
    def from_env(cls, env: Env) -> WriterConfig:
        min_rows = env.get_int("TSMESH_WRITER_MIN_ROWS", 1000, minimum=1)
        max_wait_ms = env.get_int("TSMESH_WRITER_MAX_WAIT_MS", 100, minimum=1, maximum=60_000)
        return cls(
            min_rows=min_rows,
            max_rows=env.get_int("TSMESH_WRITER_MAX_ROWS", 50_000, minimum=min_rows),
            max_wait_ms=max_wait_ms,
            # how long a batch waits for more once its first record is in (ADR 0207)
            linger_ms=env.get_int("TSMESH_WRITER_LINGER_MS", min(20, max_wait_ms), minimum=0, maximum=max_wait_ms),
            pool_size=env.get_int("TSMESH_WRITER_POOL_SIZE", 4, minimum=2, maximum=64),
            retry_max_seconds=env.get_float("TSMESH_WRITER_RETRY_MAX_SECONDS", 5.0, minimum=0.1),
            rollup_interval_ms=env.get_int("TSMESH_ROLLUP_INTERVAL_MS", 100, minimum=10),
            rollup_batch=env.get_int("TSMESH_ROLLUP_BATCH", 500_000, minimum=1),
            raw_days=env.get_int("TSMESH_RETENTION_RAW_DAYS", 30, minimum=1),
            rollup_1m_days=env.get_int("TSMESH_RETENTION_ROLLUP_1M_DAYS", 90, minimum=1),
            rollup_1h_days=env.get_int("TSMESH_RETENTION_ROLLUP_1H_DAYS", 730, minimum=1),
            partitions_ahead_days=env.get_int("TSMESH_PARTITIONS_AHEAD_DAYS", 3, minimum=1, maximum=366),
            maintenance_interval_s=env.get_float("TSMESH_MAINTENANCE_INTERVAL_SECONDS", 3600.0, minimum=1.0),
            # A commit holding a point older than this bumps the tenant's late generation. It must
            # not exceed query's TSMESH_QUERY_LATE_WINDOW_SECONDS (which query refuses below
            # LATE_WRITE_SECONDS), so values above LATE_WRITE_SECONDS are refused (ADR 0203).
            late_window_s=env.get_int(
                "TSMESH_WRITER_LATE_WINDOW_SECONDS", LATE_WRITE_SECONDS, minimum=0, maximum=LATE_WRITE_SECONDS
            ),
        )


@dataclass(frozen=True)
class IngestConfig:
    """Everything the ingest process reads from its environment."""

    common: CommonConfig
    mode: str
    database_url: str
    kafka: KafkaConfig
    writer: WriterConfig
    validation: ValidationLimits
    limits: TenantLimits
    limit_overrides: Mapping[str, TenantLimits]
    # new series one replica admits per tenant while Redis (the shared count) is unreachable (ADR 0211)
    unchecked_new_series: int = 1_000

    @property
    def runs_api(self) -> bool:
        return self.mode in ("all", "api")

    @property
    def runs_writer(self) -> bool:
        return self.mode in ("all", "writer")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> IngestConfig:
        env = Env(environ)
        mode = env.get_str("TSMESH_INGEST_MODE", "all").lower()
        if mode not in MODES:
            raise ConfigError("TSMESH_INGEST_MODE", f"must be one of {', '.join(MODES)}, got {mode!r}")
        writer = WriterConfig.from_env(env)
        limits = TenantLimits(
            points_per_second=env.get_float("TSMESH_INGEST_POINTS_PER_SECOND", 200_000.0, minimum=1.0),
            burst_points=env.get_int("TSMESH_INGEST_BURST_POINTS", 400_000, minimum=1),
            max_active_series=env.get_int("TSMESH_INGEST_MAX_ACTIVE_SERIES", 1_000_000, minimum=1),
            new_series_per_second=env.get_float("TSMESH_INGEST_NEW_SERIES_PER_SECOND", 1_000.0, minimum=0.001),
            burst_new_series=env.get_int("TSMESH_INGEST_BURST_NEW_SERIES", 10_000, minimum=1),
        )
        validation = ValidationLimits(
            max_metric_length=env.get_int("TSMESH_INGEST_MAX_METRIC_LENGTH", 200, minimum=1),
            max_labels=env.get_int("TSMESH_INGEST_MAX_LABELS", 32, minimum=0),
            max_label_name_length=env.get_int("TSMESH_INGEST_MAX_LABEL_NAME_LENGTH", 128, minimum=1),
            max_label_value_bytes=env.get_int("TSMESH_INGEST_MAX_LABEL_VALUE_BYTES", 1024, minimum=1),
            allow_non_finite=env.get_bool("TSMESH_INGEST_ALLOW_NON_FINITE", True),
            max_past_seconds=writer.raw_days * 86_400,
            retained_days=writer.raw_days,
            max_future_seconds=env.get_int("TSMESH_INGEST_MAX_FUTURE_SECONDS", 600, minimum=0),
            max_points_per_request=env.get_int("TSMESH_INGEST_MAX_POINTS_PER_REQUEST", 10_000, minimum=1),
            max_request_bytes=env.get_int("TSMESH_INGEST_MAX_REQUEST_BYTES", 4 * 1024 * 1024, minimum=1024),
        )
        if limits.burst_points < validation.max_points_per_request:
            raise ConfigError(
                "TSMESH_INGEST_BURST_POINTS",
                "must be >= TSMESH_INGEST_MAX_POINTS_PER_REQUEST or full requests never pass",
            )
        return cls(
            common=CommonConfig.from_env(environ, service="ingest", grpc_port=50051, metrics_port=9101),
            mode=mode,
            database_url=env.get_str(
                "TSMESH_DATABASE_URL", "postgresql://tsmesh_ingest@127.0.0.1:5432/tsmesh", insecure_default=True
            ),
            kafka=KafkaConfig.from_env(env),
            writer=writer,
            validation=validation,
            limits=limits,
            limit_overrides=_overrides(env, limits),
            unchecked_new_series=env.get_int("TSMESH_INGEST_UNCHECKED_NEW_SERIES", 1_000, minimum=0),
        )


def _overrides(env: Env, defaults: TenantLimits) -> Mapping[str, TenantLimits]:
    """``TSMESH_INGEST_TENANT_LIMITS``: JSON ``{"<tenant>": {"points_per_second": .., ...}}``."""
    raw = env.raw("TSMESH_INGEST_TENANT_LIMITS")
    if raw is None:
        return {}
    try:
        parsed = orjson.loads(raw)
        result = {}
        for tenant, values in parsed.items():
            result[str(tenant)] = TenantLimits(
                points_per_second=float(values.get("points_per_second", defaults.points_per_second)),
                burst_points=int(values.get("burst_points", defaults.burst_points)),
                max_active_series=int(values.get("max_active_series", defaults.max_active_series)),
                new_series_per_second=float(values.get("new_series_per_second", defaults.new_series_per_second)),
                burst_new_series=int(values.get("burst_new_series", defaults.burst_new_series)),
            )
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError) as exc:
        raise ConfigError("TSMESH_INGEST_TENANT_LIMITS", f"must be a JSON object of tenant limits ({exc})") from None
    for tenant, tenant_limits in result.items():
        rate = tenant_limits.new_series_per_second
        if not (rate > 0 and rate != float("inf")) or tenant_limits.burst_new_series < 1:
            raise ConfigError(
                "TSMESH_INGEST_TENANT_LIMITS",
                f"tenant {tenant!r}: new_series_per_second must be > 0 and finite, burst_new_series >= 1",
            )
    return result
