"""The query service's composition root: ``connect`` opens its clients, ``build`` assembles the
service over them (``__main__`` runs both; tests pass their own clients to ``build``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tsmesh_common.bootstrap import Mesh, connect_mesh, follow_revocations, start_process
from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.server import GrpcApp
from tsmesh_query.cache import LruCache, RedisCache
from tsmesh_query.config import QueryConfig
from tsmesh_query.engine import RangeEngine
from tsmesh_query.export import SERVICE_NAME as EXPORT_SERVICE
from tsmesh_query.export import ExportService
from tsmesh_query.export import add_to_server as add_export
from tsmesh_query.generation import GenerationReader
from tsmesh_query.live import LiveHub
from tsmesh_query.lookups import Lookups
from tsmesh_query.promql.catalog import Catalog
from tsmesh_query.promql.engine import PromEngine
from tsmesh_query.promql.results import ResultCache
from tsmesh_query.promql.rpc import PromRpc
from tsmesh_query.service import SERVICE_NAME, QueryService, add_to_server
from tsmesh_query.store import Database


@dataclass
class QueryComponents:
    """The built service and the parts tests and benchmarks look at."""

    app: GrpcApp
    engine: RangeEngine
    hub: LiveHub
    db: Database
    redis: Redis
    prom: PromRpc


@dataclass
class QueryClients:
    """What the query service talks to: Redis, and auth (benchmarks may run without)."""

    redis: Redis
    mesh: Mesh | None

    async def close(self) -> None:
        if self.mesh is not None:
            await self.mesh.close()
        await self.redis.aclose()


def connect(cfg: QueryConfig) -> QueryClients:
    """Start logging and tracing, then open the clients of a query process."""
    start_process(cfg.common)
    return QueryClients(create_redis(cfg.common.redis_url), connect_mesh(cfg.common))


def create_redis(url: str) -> Redis:
    """A Redis client that fails fast (short timeouts) so a dead Redis never stalls a query."""
    return Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5, retry_on_timeout=False)


def build(cfg: QueryConfig, clients: QueryClients, clock: Callable[[], int] = time.time_ns) -> QueryComponents:
    """Wire database, caches, engine, live hub and servicer into a GrpcApp (not started).

    ``clock`` (ns) decides which chunks are past the late-arrival window; benchmarks compress time.
    """
    redis, mesh = clients.redis, clients.mesh
    authenticator = mesh.authenticator if mesh is not None else None
    audit = mesh.audit if mesh is not None else None
    db = Database(cfg.database)
    namespace = cfg.common.redis_namespace
    redis_breaker = CircuitBreaker("redis", failures=(RedisError, OSError), failure_threshold=3, reset_seconds=2.0)
    l1: LruCache[bytes] = LruCache("l1", cfg.cache.l1_max_bytes // 2)
    results: LruCache[bytes] = LruCache("l1_results", cfg.cache.l1_max_bytes // 2)
    l2 = RedisCache(redis, redis_breaker, cfg.cache.l2_max_entry_bytes, namespace) if cfg.cache.l2_enabled else None
    generations = GenerationReader(redis, redis_breaker, namespace)
    engine = RangeEngine(db, cfg.limits, cfg.cache, l1, results, l2, generations, clock)
    hub = LiveHub(redis, cfg.subscribe, namespace, LeanRedis.from_url(cfg.common.redis_url))
    if authenticator is not None:
        authenticator.on_revocation(hub.revoke)
    app = GrpcApp(authenticator, audit=audit, tuning=cfg.common.grpc)
    # PromQL answers get their own in-process budget, a quarter of L1's (ADR 0310)
    prom_results = ResultCache(
        generations, LruCache("l1_promql", cfg.cache.l1_max_bytes // 4), cfg.cache.l1_immutable_ttl_s
    )
    prom = PromRpc(PromEngine(db, cfg.limits), Catalog(db, cfg.limits), prom_results)
    servicer = QueryService(engine, Lookups(db, cfg.limits), hub, cfg.limits, prom)
    app.add_service(SERVICE_NAME, lambda server: add_to_server(servicer, server))
    exporter = ExportService(db, engine, cfg.limits, audit=audit)
    app.add_service(EXPORT_SERVICE, lambda server: add_export(exporter, server))
    if mesh is not None:
        follow_revocations(cfg.common, app, mesh.authenticator, redis)
    app.run_in_background(hub.follow(), "live-feed")
    app.run_in_background(hub.heartbeats(), "live-heartbeats")
    app.on_shutdown(db.close)
    app.on_shutdown(generations.close)
    app.on_shutdown(clients.close)
    return QueryComponents(app, engine, hub, db, redis, prom)
