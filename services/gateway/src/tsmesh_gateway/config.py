"""The gateway's frozen configuration, read from the environment and validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Network, ip_network

from tsmesh_common.config import CommonConfig, ConfigError, Env
from tsmesh_gateway.clientaddr import Network
from tsmesh_gateway.push.config import PushConfig

ROUTE_CLASSES = ("write", "query", "auth")
_DEFAULT_LIMITS = {
    # per token/user, per client address: (rate per second, burst)
    "write": ((200.0, 400), (400.0, 800)),
    "query": ((500.0, 1000), (1000.0, 2000)),
    "auth": ((5.0, 20), (10.0, 40)),
}


@dataclass(frozen=True, slots=True)
class Limit:
    """A GCRA budget: ``rate`` units per second, ``burst`` at once."""

    rate: float
    burst: int


@dataclass(frozen=True)
class RateLimits:
    """Per route class, one budget per token or user and one per client address."""

    per_principal: Mapping[str, Limit]
    per_address: Mapping[str, Limit]
    enabled: bool = True


# the listen backlog of the HTTP and WebSocket ports: asyncio's default of 100 overflows in a reconnect
# storm and every dropped SYN costs its client a 1 s (then 3 s) retransmission
LISTEN_BACKLOG = 4096
HTTP_PORT = 8080
# a socket's points wait at most this long to share a frame: the live feed's latency budget
MAX_COALESCE_SECONDS = 0.001


@dataclass(frozen=True)
class StreamConfig:
    """WebSocket settings of ``/v1/stream``."""

    auth_timeout_seconds: float = 5.0
    ping_interval_seconds: float = 20.0
    idle_timeout_seconds: float = 60.0
    send_queue_points: int = 10_000
    coalesce_seconds: float = MAX_COALESCE_SECONDS
    max_subscriptions: int = 100
    max_message_bytes: int = 64 * 1024
    reauth_seconds: float = 30.0
    listener: bool = True
    port: int = HTTP_PORT + 1  # from_env: TSMESH_HTTP_PORT + 1
    # None: as many as the worker's open-file limit allows (stream.socket_budget, ADR 0452)
    max_connections: int | None = None
    # fairness, per worker process (ADR 0453): sockets per token and per client address, and new
    # handshakes per client address (GCRA, per second with a burst)
    max_connections_per_token: int = 1_000
    max_connections_per_address: int = 1_000
    handshakes_per_address: Limit = Limit(20.0, 100)


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the gateway reads from its environment."""

    common: CommonConfig
    http_host: str
    http_port: int
    workers: int
    ingest_addr: str
    query_addr: str
    deadline_seconds: float
    breaker_failures: int
    breaker_reset_seconds: float
    max_body_bytes: int
    max_json_depth: int
    body_timeout_seconds: float
    cors_origins: tuple[str, ...]
    tls_cert: str | None
    tls_key: str | None
    cache_ttl_seconds: float
    cache_max_bytes: int
    limits: RateLimits
    stream: StreamConfig = field(default_factory=StreamConfig)
    fast_path: bool = True
    max_write_points: int = 10_000
    # The ingest writer (DataLifecycleService: retention, delete, cardinality); "" = ingest_addr.
    ingest_writer_addr: str = ""
    trusted_proxies: tuple[Network, ...] = ()
    push: PushConfig = field(default_factory=PushConfig)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> GatewayConfig:
        """Build and validate; every error names the variable at fault."""
        env = Env(environ)
        common = CommonConfig.from_env(environ, service="gateway", grpc_port=0, metrics_port=0)
        tls_cert, tls_key = env.raw("TSMESH_GATEWAY_TLS_CERT"), env.raw("TSMESH_GATEWAY_TLS_KEY")
        if (tls_cert is None) != (tls_key is None):
            raise ConfigError("TSMESH_GATEWAY_TLS_KEY", "TLS needs both TSMESH_GATEWAY_TLS_CERT and _KEY")
        if env.raw("TSMESH_GATEWAY_CACHE_ENTRIES") is not None:
            raise ConfigError("TSMESH_GATEWAY_CACHE_ENTRIES", "replaced by TSMESH_GATEWAY_CACHE_MAX_BYTES (ADR 0404)")
        origins = env.get_list("TSMESH_GATEWAY_CORS_ORIGINS")
        if "*" in origins:
            raise ConfigError("TSMESH_GATEWAY_CORS_ORIGINS", "'*' is not allowed (credentials are sent); list origins")
        http_port = env.get_port("TSMESH_HTTP_PORT", HTTP_PORT)
        stream = _stream(env, http_port)
        return cls(
            common=common,
            http_host=env.get_str("TSMESH_HTTP_HOST", "127.0.0.1"),
            http_port=http_port,
            workers=env.get_int("TSMESH_GATEWAY_WORKERS", 1, minimum=1, maximum=64),
            ingest_addr=env.get_str("TSMESH_INGEST_ADDR", "127.0.0.1:50051"),
            query_addr=env.get_str("TSMESH_QUERY_ADDR", "127.0.0.1:50052"),
            ingest_writer_addr=env.get_str("TSMESH_INGEST_WRITER_ADDR", ""),
            deadline_seconds=env.get_float("TSMESH_GATEWAY_DEADLINE_SECONDS", 10.0, minimum=0.01),
            breaker_failures=env.get_int("TSMESH_GATEWAY_BREAKER_FAILURES", 5, minimum=1),
            breaker_reset_seconds=env.get_float("TSMESH_GATEWAY_BREAKER_RESET_SECONDS", 2.0, minimum=0.01),
            max_body_bytes=env.get_int("TSMESH_GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024),
            max_json_depth=env.get_int("TSMESH_GATEWAY_MAX_JSON_DEPTH", 16, minimum=4, maximum=512),
            body_timeout_seconds=env.get_float("TSMESH_GATEWAY_BODY_TIMEOUT_SECONDS", 10.0, minimum=0.05),
            cors_origins=origins,
            tls_cert=tls_cert,
            tls_key=tls_key,
            cache_ttl_seconds=env.get_float("TSMESH_GATEWAY_CACHE_TTL_SECONDS", 2.0, minimum=0.0),
            cache_max_bytes=env.get_int("TSMESH_GATEWAY_CACHE_MAX_BYTES", 64 * 1024 * 1024, minimum=0),
            limits=_limits(env),
            stream=stream,
            fast_path=env.get_bool("TSMESH_GATEWAY_FAST_PATH", True),
            max_write_points=env.get_int("TSMESH_GATEWAY_MAX_WRITE_POINTS", 10_000, minimum=1),
            trusted_proxies=_trusted_proxies(env),
            push=PushConfig.from_env(environ),
        )


def _stream(env: Env, http_port: int) -> StreamConfig:
    """``TSMESH_GATEWAY_WS_*``, each unset one at :class:`StreamConfig`'s default."""
    d = StreamConfig()
    max_connections = "TSMESH_GATEWAY_WS_MAX_CONNECTIONS"
    return StreamConfig(
        auth_timeout_seconds=env.get_float(
            "TSMESH_GATEWAY_WS_AUTH_TIMEOUT_SECONDS", d.auth_timeout_seconds, minimum=0.1
        ),
        ping_interval_seconds=env.get_float("TSMESH_GATEWAY_WS_PING_SECONDS", d.ping_interval_seconds, minimum=0.1),
        idle_timeout_seconds=env.get_float(
            "TSMESH_GATEWAY_WS_IDLE_TIMEOUT_SECONDS", d.idle_timeout_seconds, minimum=0.2
        ),
        send_queue_points=env.get_int("TSMESH_GATEWAY_WS_SEND_QUEUE_POINTS", d.send_queue_points, minimum=1),
        coalesce_seconds=min(
            env.get_float("TSMESH_GATEWAY_WS_COALESCE_SECONDS", d.coalesce_seconds, minimum=0.0), MAX_COALESCE_SECONDS
        ),
        max_subscriptions=env.get_int("TSMESH_GATEWAY_WS_MAX_SUBSCRIPTIONS", d.max_subscriptions, minimum=1),
        reauth_seconds=env.get_float("TSMESH_GATEWAY_WS_REAUTH_SECONDS", d.reauth_seconds, minimum=0.1),
        listener=env.get_bool("TSMESH_GATEWAY_WS_LISTENER", d.listener),
        port=env.get_port("TSMESH_GATEWAY_WS_PORT", http_port + 1),
        max_connections=None if env.raw(max_connections) is None else env.get_int(max_connections, 1, minimum=1),
        max_connections_per_token=env.get_int(
            "TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_TOKEN", d.max_connections_per_token, minimum=1
        ),
        max_connections_per_address=env.get_int(
            "TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_ADDRESS", d.max_connections_per_address, minimum=1
        ),
        handshakes_per_address=_limit(
            env,
            "TSMESH_GATEWAY_WS_HANDSHAKES_PER_ADDRESS",
            d.handshakes_per_address.rate,
            d.handshakes_per_address.burst,
        ),
    )


def _trusted_proxies(env: Env) -> tuple[Network, ...]:
    """The proxies whose X-Forwarded-For is believed: IPs or CIDRs, IPv4 or IPv6 (ADR 0451)."""
    name = "TSMESH_GATEWAY_TRUSTED_PROXIES"
    networks: list[Network] = []
    for entry in env.get_list(name):
        try:
            network = ip_network(entry)
        except ValueError as exc:  # names the entry: "... does not appear to be ...", "... has host bits set"
            raise ConfigError(name, f"bad entry {entry!r}: {exc}") from None
        if network.prefixlen == 0:
            raise ConfigError(name, f"bad entry {entry!r}: trusting every address lets any client choose its own")
        if isinstance(network, IPv6Network) and network.network_address.ipv4_mapped is not None:
            raise ConfigError(name, f"bad entry {entry!r}: list IPv4-mapped addresses as IPv4")
        networks.append(network)
    return tuple(networks)


def _limits(env: Env) -> RateLimits:
    per_principal: dict[str, Limit] = {}
    per_address: dict[str, Limit] = {}
    for route_class in ROUTE_CLASSES:
        (p_rate, p_burst), (a_rate, a_burst) = _DEFAULT_LIMITS[route_class]
        upper = route_class.upper()
        per_principal[route_class] = _limit(env, f"TSMESH_GATEWAY_LIMIT_{upper}", p_rate, p_burst)
        per_address[route_class] = _limit(env, f"TSMESH_GATEWAY_LIMIT_{upper}_PER_ADDRESS", a_rate, a_burst)
    return RateLimits(per_principal, per_address, enabled=env.get_bool("TSMESH_GATEWAY_RATE_LIMITS", True))


def _limit(env: Env, name: str, rate: float, burst: int) -> Limit:
    """``RATE:BURST`` (units per second, units at once), e.g. ``200:400``."""
    value = env.raw(name)
    if value is None:
        return Limit(rate, burst)
    text_rate, sep, text_burst = value.partition(":")
    try:
        parsed = Limit(float(text_rate), int(text_burst) if sep else max(1, int(float(text_rate))))
    except ValueError:
        raise ConfigError(name, f"must look like RATE:BURST (e.g. 200:400), got {value!r}") from None
    if not parsed.rate > 0 or parsed.burst < 1 or parsed.rate == float("inf"):
        raise ConfigError(name, "rate must be > 0 and burst >= 1")
    return parsed
