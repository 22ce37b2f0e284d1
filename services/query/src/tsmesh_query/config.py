"""The query service's frozen configuration and per-query limits, read from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tsmesh_common.config import CommonConfig, ConfigError, Env
from tsmesh_common.redis_keys import LATE_WRITE_SECONDS

NS_PER_SECOND = 1_000_000_000
# Chunks ending before now minus this are keyed on the late generation, which the writer bumps for
# points older than LATE_WRITE_SECONDS: the extra minute covers clock skew between hosts (ADR 0303).
DEFAULT_LATE_WINDOW_S = LATE_WRITE_SECONDS + 60


@dataclass(frozen=True)
class QueryLimits:
    """What one query may cost; every refusal names the limit it hit."""

    max_series: int = 10_000
    max_series_scan: int = 100_000
    max_points: int = 2_000_000
    max_buckets: int = 20_000
    max_regex_length: int = 1024
    max_matchers: int = 32
    max_list_limit: int = 10_000
    regex_max_mem: int = 1 << 20

    @classmethod
    def from_env(cls, env: Env) -> QueryLimits:
        return cls(
            max_series=env.get_int("TSMESH_QUERY_MAX_SERIES", cls.max_series, minimum=1),
            max_series_scan=env.get_int("TSMESH_QUERY_MAX_SERIES_SCAN", cls.max_series_scan, minimum=1),
            max_points=env.get_int("TSMESH_QUERY_MAX_POINTS", cls.max_points, minimum=1),
            max_buckets=env.get_int("TSMESH_QUERY_MAX_BUCKETS", cls.max_buckets, minimum=1),
            max_regex_length=env.get_int("TSMESH_QUERY_MAX_REGEX_LENGTH", cls.max_regex_length, minimum=1),
        )


@dataclass(frozen=True)
class CacheConfig:
    """Sizes and lifetimes of the L1 (in-process) and L2 (Redis) result caches."""

    l1_max_bytes: int = 64 * 1024 * 1024
    l1_immutable_ttl_s: float = 3600.0
    l1_recent_ttl_s: float = 60.0
    l2_enabled: bool = True
    l2_immutable_ttl_s: int = 7 * 86_400
    l2_recent_ttl_s: int = 300
    l2_max_entry_bytes: int = 4 * 1024 * 1024
    late_window_ns: int = DEFAULT_LATE_WINDOW_S * NS_PER_SECOND
    chunks_per_query: int = 32

    @classmethod
    def from_env(cls, env: Env) -> CacheConfig:
        return cls(
            l1_max_bytes=env.get_int("TSMESH_QUERY_L1_MAX_BYTES", cls.l1_max_bytes, minimum=0),
            l1_immutable_ttl_s=env.get_float("TSMESH_QUERY_L1_TTL_SECONDS", cls.l1_immutable_ttl_s, minimum=0.0),
            l2_enabled=env.get_bool("TSMESH_QUERY_L2_ENABLED", True),
            l2_immutable_ttl_s=env.get_int("TSMESH_QUERY_L2_TTL_SECONDS", cls.l2_immutable_ttl_s, minimum=1),
            late_window_ns=env.get_int(
                "TSMESH_QUERY_LATE_WINDOW_SECONDS", DEFAULT_LATE_WINDOW_S, minimum=DEFAULT_LATE_WINDOW_S
            )
            * NS_PER_SECOND,
            chunks_per_query=env.get_int("TSMESH_QUERY_CHUNKS_PER_QUERY", cls.chunks_per_query, minimum=1),
        )


@dataclass(frozen=True)
class DatabaseConfig:
    """The primary and read-replica DSNs (role tsmesh_query) and timeouts."""

    primary_url: str = "postgresql://tsmesh_query@127.0.0.1:5432/tsmesh"
    replica_urls: tuple[str, ...] = ()
    pool_min: int = 1
    pool_max: int = 10
    statement_timeout_s: float = 10.0
    connect_timeout_s: float = 2.0
    acquire_timeout_s: float = 5.0
    breaker_threshold: int = 3
    breaker_reset_s: float = 2.0

    @classmethod
    def from_env(cls, env: Env) -> DatabaseConfig:
        url = env.get_str("TSMESH_DATABASE_URL", cls.primary_url, insecure_default=True)
        if not url.startswith(("postgresql://", "postgres://")):
            raise ConfigError("TSMESH_DATABASE_URL", "must be a postgresql:// URL")
        replicas = env.get_list("TSMESH_DATABASE_REPLICA_URLS")
        for replica in replicas:
            if not replica.startswith(("postgresql://", "postgres://")):
                raise ConfigError("TSMESH_DATABASE_REPLICA_URLS", "every entry must be a postgresql:// URL")
        return cls(
            primary_url=url,
            replica_urls=replicas,
            pool_min=env.get_int("TSMESH_DATABASE_POOL_MIN", cls.pool_min, minimum=0),
            pool_max=env.get_int("TSMESH_DATABASE_POOL_MAX", cls.pool_max, minimum=1),
            statement_timeout_s=env.get_float("TSMESH_QUERY_STATEMENT_TIMEOUT_SECONDS", 10.0, minimum=0.1),
        )


@dataclass(frozen=True)
class SubscribeConfig:
    """Live subscriptions: queue bound per subscriber and heartbeat period."""

    queue_size: int = 1024
    heartbeat_s: float = 5.0
    max_subscribers: int = 10_000
    max_subscribers_per_tenant: int = 2_000

    @classmethod
    def from_env(cls, env: Env) -> SubscribeConfig:
        return cls(
            queue_size=env.get_int("TSMESH_QUERY_SUBSCRIBER_QUEUE", cls.queue_size, minimum=1),
            heartbeat_s=env.get_float("TSMESH_QUERY_HEARTBEAT_SECONDS", cls.heartbeat_s, minimum=0.05),
            max_subscribers=env.get_int("TSMESH_QUERY_MAX_SUBSCRIBERS", cls.max_subscribers, minimum=1),
            max_subscribers_per_tenant=env.get_int(
                "TSMESH_QUERY_MAX_SUBSCRIBERS_PER_TENANT", cls.max_subscribers_per_tenant, minimum=1
            ),
        )


@dataclass(frozen=True)
class QueryConfig:
    """Everything the query service reads from its environment."""

    common: CommonConfig
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    limits: QueryLimits = field(default_factory=QueryLimits)
    cache: CacheConfig = field(default_factory=CacheConfig)
    subscribe: SubscribeConfig = field(default_factory=SubscribeConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> QueryConfig:
        env = Env(environ)
        return cls(
            common=CommonConfig.from_env(environ, service="query", grpc_port=50052, metrics_port=9102),
            database=DatabaseConfig.from_env(env),
            limits=QueryLimits.from_env(env),
            cache=CacheConfig.from_env(env),
            subscribe=SubscribeConfig.from_env(env),
        )
