"""Query service benchmark (``make bench-query``): in-process service, real PostgreSQL and Redis.

Figures, each beside a baseline measured in the same run (5. needs Debian's prometheus: make bench-tools):
1. cached QueryRange calls/s vs a bare grpc.aio echo (same process, same concurrency, measured in
   alternating one-second slices so both see the same machine load);
2. uncached p99: 1 series x 24 h of 10 s data at step 1 min; 100 series x 30 days at step 1 h (rollups);
3. a time-compressed dashboard (100 panels, 1 h / 24 h / 7 d windows, refresh 10 s, data written and
   generations bumped meanwhile): chunk cache hit ratio;
4. Subscribe delivery latency from PUBLISH to receipt at 1,000 points/s;
5. PromQL ``sum by (dc) (rate(x[5m]))`` over 100 series x 24 h at step 1 min, uncached and cached,
   beside Prometheus on the same data.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import LatencyRecorder, Report, drive, echo_baseline
from local_prometheus import Dataset, Prometheus
from redis.asyncio import Redis
from throwaway import fresh_redis_namespace
from tsmesh.v1 import common_pb2, query_pb2, query_pb2_grpc

from tsmesh_common.authn import Authenticator, AuthenticatorConfig
from tsmesh_common.bootstrap import Mesh
from tsmesh_common.config import CommonConfig
from tsmesh_common.redis_keys import LATE_WRITE_SECONDS, RedisNamespace
from tsmesh_query.config import CacheConfig, DatabaseConfig, QueryConfig
from tsmesh_query.wiring import QueryClients, QueryComponents, build, create_redis

ROOT = Path(__file__).resolve().parent.parent
PG = os.environ.get("TSMESH_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("TSMESH_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
NS = RedisNamespace(fresh_redis_namespace("bench"))  # this run's names: no other stack hears it
S = 1_000_000_000
MIN = 60 * S
HOUR = 60 * MIN
DAY = 24 * HOUR
DURATION = float(os.environ.get("TSMESH_BENCH_SECONDS", "5"))
CONCURRENCY = 32


class Keys:
    """Ed25519 JWTs verified by a real Authenticator (no auth service needed)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(secret) if secret else Ed25519PrivateKey.generate()
        public = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = [{**public, "kid": "bench", "alg": "EdDSA", "use": "sig"}]

    def secret(self) -> str:
        """The private key as hex, for the ``--serve`` processes of this run (a throwaway key)."""
        raw = self.key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        return raw.hex()

    async def fetch_jwks(self) -> list[dict[str, str]]:
        return self.jwks

    async def introspect(self, token: str) -> None:
        return None

    def token(self, tenant: str) -> str:
        now = int(time.time())
        claims = {
            "iss": "tsmesh-auth",
            "aud": "tsmesh",
            "sub": "bench",
            "tid": tenant,
            "scope": "read",
            "jti": uuid.uuid4().hex,
            "iat": now,
            "exp": now + 3600,
        }
        return str(jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": "bench"}))


async def create_db() -> str:
    name = f"tsmesh_bench_query_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(f"{PG}/postgres")
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    conn = await asyncpg.connect(f"{PG}/{name}")
    await conn.execute((ROOT / "deploy" / "postgres" / "bootstrap.sql").read_text())
    await conn.close()
    code = "import sys; from tsmesh_ingest.migrate import upgrade; upgrade(sys.argv[1])"
    dsn = PG.replace("postgres@", "tsmesh_ingest@") + f"/{name}"
    done = await asyncio.to_thread(subprocess.run, [sys.executable, "-c", code, dsn], capture_output=True, check=False)
    if done.returncode != 0:
        conn = await asyncpg.connect(f"{PG}/{name}")
        await conn.execute("SET ROLE tsmesh_ingest")
        await conn.execute((ROOT / "tests" / "query" / "ts_schema.sql").read_text())
        await conn.close()
    return name


async def drop_db(name: str) -> None:
    conn = await asyncpg.connect(f"{PG}/postgres")
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


class Writer:
    """Writes like ingest's writer (points + pending ranges, then the generation bumps) and refresher."""

    def __init__(self, conn: asyncpg.Connection, redis: Redis) -> None:
        self.conn = conn
        self.redis = redis
        self.lock = asyncio.Lock()

    async def partitions(self, lo: int, hi: int) -> None:
        for day in range(lo // DAY, hi // DAY + 1):
            stamp = time.strftime("%Y%m%d", time.gmtime(day * 86_400))
            await self.conn.execute(
                f"CREATE TABLE IF NOT EXISTS ts.points_p{stamp} PARTITION OF ts.points "
                f"FOR VALUES FROM ({day * DAY}) TO ({(day + 1) * DAY})"
            )

    async def series(self, tenant: str, metric: str, labels: dict[str, str]) -> int:
        sid = random.getrandbits(62)
        await self.conn.execute(
            "INSERT INTO ts.series (series_id, tenant_id, metric, labels) VALUES ($1,$2,$3,$4::jsonb)",
            sid,
            tenant,
            metric,
            json.dumps(labels),
        )
        return sid

    async def write(self, tenant: str, rows: list[tuple[int, int, float]]) -> None:
        async with self.lock, self.conn.transaction():
            await self.conn.copy_records_to_table("points", schema_name="ts", records=rows)
            spans: dict[int, tuple[int, int]] = {}
            for sid, ts, _ in rows:
                lo, hi = spans.get(sid, (ts, ts))
                spans[sid] = (min(lo, ts), max(hi, ts))
            await self.conn.copy_records_to_table(
                "rollup_pending",
                schema_name="ts",
                columns=["series_id", "lo", "hi"],
                records=[(s, lo, hi) for s, (lo, hi) in spans.items()],
            )
        await self.redis.incr(NS.data_generation_key(tenant))
        if min(ts for _, ts, _ in rows) < time.time_ns() - LATE_WRITE_SECONDS * S:
            await self.redis.incr(NS.late_generation_key(tenant))

    async def refresh(self, lo: int, hi: int) -> None:
        async with self.lock, self.conn.transaction():
            for table, width in (("rollup_1m", MIN), ("rollup_1h", HOUR)):
                a, b = lo - lo % width, hi - hi % width + width
                await self.conn.execute(f"DELETE FROM ts.{table} WHERE bucket >= $1 AND bucket < $2", a, b)
                # 1m buckets also say whether their values never go down and their ms are distinct
                flags = (
                    ", bool_and(prev IS NULL OR value >= prev)"
                    ", bool_and(prev_ts IS NULL OR ts / 1000000 > prev_ts / 1000000)"
                    if table == "rollup_1m"
                    else ""
                )
                await self.conn.execute(
                    f"""INSERT INTO ts.{table}
                    SELECT series_id, ts - ts % {width}, count(*), sum(value), min(value), max(value), min(ts),
                      (array_agg(value ORDER BY ts))[1], max(ts), (array_agg(value ORDER BY ts DESC))[1]{flags}
                    FROM (SELECT series_id, ts, value,
                            lag(value) OVER (PARTITION BY series_id, ts - ts % {width} ORDER BY ts) AS prev,
                            lag(ts) OVER (PARTITION BY series_id, ts - ts % {width} ORDER BY ts) AS prev_ts
                          FROM ts.points WHERE ts >= $1 AND ts < $2) AS p
                    GROUP BY 1, 2""",
                    a,
                    b,
                )
            await self.conn.execute("DELETE FROM ts.rollup_pending WHERE hi < $1", hi)


class IngestWriter(Writer):
    """Writes through ingest's own store (``PointStore``: the fast path merges the batch's partial
    aggregates into the rollups, no pending range) and refresher, as the production writer does."""

    def __init__(self, conn: asyncpg.Connection, redis: Redis, pool: asyncpg.Pool) -> None:
        from tsmesh_ingest.partitions import PartitionManager
        from tsmesh_ingest.rollups import RollupRefresher
        from tsmesh_ingest.store import KnownSeries, PointStore

        super().__init__(conn, redis)
        self.store = PointStore(pool, PartitionManager(), KnownSeries())
        self.refresher = RollupRefresher(pool)
        self.identity: dict[int, tuple[str, dict[str, str], int]] = {}

    async def series(self, tenant: str, metric: str, labels: dict[str, str]) -> int:
        from tsmesh_ingest.series_id import series_id

        unsigned = series_id(tenant, metric, labels.items())
        signed = unsigned - (1 << 64) if unsigned >= 1 << 63 else unsigned
        self.identity[signed] = (metric, labels, unsigned)
        return signed

    async def write(self, tenant: str, rows: list[tuple[int, int, float]]) -> None:
        from tsmesh_ingest.series_id import signed_array
        from tsmesh_ingest.store import Item

        points, ids = [], []
        for sid, ts, value in rows:
            metric, labels, unsigned = self.identity[sid]
            points.append(common_pb2.Point(metric=metric, labels=labels, timestamp_ns=ts, value=value))
            ids.append(unsigned)
        batch = common_pb2.PointBatch(tenant_id=tenant, points=points, series_ids=ids, accepted_at_ns=time.time_ns())
        async with self.lock:
            await self.store.write([Item(tenant, batch, signed_array(ids), batch.SerializeToString())])
        await self.redis.incr(NS.data_generation_key(tenant))
        if min(ts for _, ts, _ in rows) < time.time_ns() - LATE_WRITE_SECONDS * S:
            await self.redis.incr(NS.late_generation_key(tenant))

    async def refresh(self, lo: int, hi: int) -> None:
        while await self.refresher.refresh_once():
            pass


def query(metric: str, start: int, end: int, step: int, agg=query_pb2.AGGREGATION_AVG, group_by=(), matchers=()):
    return query_pb2.QueryRangeRequest(
        selector=common_pb2.Selector(metric=metric, matchers=list(matchers)),
        start_ns=start,
        end_ns=end,
        step_ns=step,
        aggregation=agg,
        group_by=list(group_by),
        fill=query_pb2.FILL_NONE,
    )


def config(db: str, cache: CacheConfig) -> QueryConfig:
    common = CommonConfig.from_env(
        {"TSMESH_REDIS_URL": REDIS_URL, "TSMESH_REDIS_NAMESPACE": NS.name}, service="query", grpc_port=0, metrics_port=0
    )
    dsn = PG.replace("postgres@", "tsmesh_query@") + f"/{db}"
    return QueryConfig(common=common, database=DatabaseConfig(primary_url=dsn, pool_max=8), cache=cache)


async def start(cfg: QueryConfig, keys: Keys, clock=time.time_ns) -> tuple[QueryComponents, grpc.aio.Channel]:
    auth = Authenticator(AuthenticatorConfig(issuer="tsmesh-auth", audience="tsmesh"), keys, keys)
    comps = build(cfg, QueryClients(create_redis(REDIS_URL), Mesh(auth)), clock)
    port = await comps.app.start("127.0.0.1", 0)
    return comps, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


async def timed(stub, req, md, n: int) -> LatencyRecorder:
    rec = LatencyRecorder()
    for _ in range(n):
        t = time.perf_counter()
        await stub.QueryRange(req, metadata=md, timeout=10)
        rec.record(time.perf_counter() - t)
    return rec


async def main(only: str | None, baseline: Path | None) -> None:
    report = Report("query")
    keys = Keys()
    redis = Redis.from_url(REDIS_URL)
    db = await create_db()
    admin = await asyncpg.connect(f"{PG}/{db}")
    await admin.execute("SET ROLE tsmesh_ingest")
    writer = Writer(admin, redis)
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    md = (("authorization", f"Bearer {keys.token(tenant)}"),)
    try:
        # --- data: 1 series x 24 h of 10 s points (rollups refreshed), 100 series x 30 d of 1 h rollups
        day0 = (time.time_ns() // DAY - 40) * DAY
        await writer.partitions(day0, day0 + DAY)
        one = await writer.series(tenant, "latency", {"svc": "api"})
        await writer.write(tenant, [(one, day0 + i * 10 * S, random.random()) for i in range(8640)])
        await writer.refresh(day0, day0 + DAY)
        hundred = [await writer.series(tenant, "temp", {"dc": f"dc{i % 4}", "rack": f"r{i}"}) for i in range(100)]
        rows = [
            (sid, day0 + h * HOUR, 360, 36.0, 0.0, 1.0, day0 + h * HOUR, 0.5, day0 + h * HOUR + 3590 * S, 0.5)
            for sid in hundred
            for h in range(720)
        ]
        await admin.copy_records_to_table("rollup_1h", schema_name="ts", records=rows)
        await admin.execute("ANALYZE")
        print(f"loaded {8640} raw points and {len(rows)} hourly rollups", flush=True)
        if only == "promql":
            await promql_vs_prometheus(db, keys, writer, report, baseline)
            return
        if only == "dashboard":  # with the benchmark's writer (pending ranges), then with ingest's own
            ingest_dsn = PG.replace("postgres@", "tsmesh_ingest@") + f"/{db}"
            pool = await asyncpg.create_pool(ingest_dsn, min_size=1, max_size=2)
            try:
                for label, dash_writer in (
                    ("bench writer", writer),
                    ("ingest writer", IngestWriter(admin, redis, pool)),
                ):
                    hit, queries, p99, lookups, errors, why = await dashboard(db, keys, dash_writer, redis)
                    report.add(f"dashboard QueryRange p99 ({label})", p99, "ms")
                    report.add(f"  dashboard queries ({label})", queries, "calls")
                    report.add(f"  dashboard chunk cache hit ratio ({label})", hit * 100, "%")
                    for name, value in why.items():
                        unit = (
                            "cores"
                            if "CPU" in name
                            else "connections"
                            if "connections" in name or "lock" in name
                            else "ms"
                        )
                        report.add(f"  dashboard {name} ({label})", value, unit)
            finally:
                await pool.close()
            return

        # --- uncached (no L1, no L2) latencies
        comps, channel = await start(config(db, CacheConfig(l1_max_bytes=0, l2_enabled=False)), keys)
        stub = query_pb2_grpc.QueryServiceStub(channel)
        q24 = query("latency", day0, day0 + DAY, MIN)
        q30 = query("temp", day0, day0 + 30 * DAY, HOUR)
        q30g = query("temp", day0, day0 + 30 * DAY, HOUR, group_by=["dc"])
        await timed(stub, q24, md, 20)
        r24 = await timed(stub, q24, md, 200)
        await timed(stub, q30, md, 5)
        r30 = await timed(stub, q30, md, 60)
        r30g = await timed(stub, q30g, md, 60)
        base_lat = await echo_baseline(1.0, 1)
        report.add(
            "uncached 1 series x 24 h @1m p99",
            r24.summary()["p99"],
            "ms",
            "echo p99",
            base_lat.latency["p99"],
            "<= 10 ms",
        )
        report.add(
            "uncached 100 series x 30 d @1h p99 (72k buckets)",
            r30.summary()["p99"],
            "ms",
            "echo p99",
            base_lat.latency["p99"],
            "<= 50 ms",
        )
        report.add(
            "uncached 100 series x 30 d @1h by dc p99",
            r30g.summary()["p99"],
            "ms",
            "echo p99",
            base_lat.latency["p99"],
            "<= 50 ms",
        )
        for name, rec in (("1 series x 24 h @1m", r24), ("100 series x 30 d @1h", r30), ("100 x 30 d by dc", r30g)):
            report.add(f"  uncached {name} p50", rec.summary()["p50"], "ms")
        await channel.close()
        await comps.app.stop(0.1)

        # --- cached QueryRange throughput vs bare echo
        comps, channel = await start(config(db, CacheConfig()), keys)
        stub = query_pb2_grpc.QueryServiceStub(channel)
        qh = query("latency", day0 + 3 * HOUR, day0 + 4 * HOUR, MIN)
        await stub.QueryRange(qh, metadata=md)

        async def cached() -> object:
            return await stub.QueryRange(qh, metadata=md, timeout=10)

        # alternate short echo and cached slices so both see the same (shared, varying) machine load
        rounds = 5
        echo_rates, rates, echo_p99s = [], [], []
        lat = LatencyRecorder()
        for _ in range(rounds):
            echo = await echo_baseline(DURATION / rounds, CONCURRENCY)
            echo_rates.append(echo.calls_per_s)
            echo_p99s.append(echo.latency["p99"])
            rate, part = await drive(cached, DURATION / rounds, CONCURRENCY)
            rates.append(rate)
            lat.extend(part)
        echo_rate, rate = sum(echo_rates) / rounds, sum(rates) / rounds
        report.add("cached QueryRange calls/s (c=32)", rate, "calls/s", "bare echo", echo_rate, ">= 80% of echo")
        report.add("cached QueryRange p99 (c=32)", lat.summary()["p99"], "ms", "echo p99", max(echo_p99s))
        await channel.close()
        await comps.app.stop(0.1)

        # --- PromQL beside Prometheus on the same data
        await promql_vs_prometheus(db, keys, writer, report, baseline)

        # --- dashboard
        hit, queries, p99, lookups, errors, why = await dashboard(db, keys, writer, redis)
        report.add("dashboard chunk cache hit ratio", hit * 100, "%", None, None, ">= 90%")
        report.add("dashboard chunk lookups", lookups, "chunks")
        report.add("dashboard QueryRange p99", p99, "ms", "echo p99", base_lat.latency["p99"])
        report.add("dashboard queries", queries, "calls")
        report.add("dashboard calls refused (overload)", sum(errors.values()), "calls")
        for name, value in why.items():
            unit = "cores" if "CPU" in name else "connections" if "connections" in name or "lock" in name else "ms"
            report.add(f"  dashboard {name}", value, unit)

        # --- subscribe latency
        sub = await subscribe_latency(db, keys, redis)
        report.add(
            "Subscribe PUBLISH->receipt p99 @1000 points/s",
            sub["p99"],
            "ms",
            "echo p99",
            base_lat.latency["p99"],
            "<= 5 ms",
        )
        report.add("Subscribe PUBLISH->receipt p50", sub["p50"], "ms")
    finally:
        await admin.close()
        await redis.aclose()
        await drop_db(db)
        report.print()
        print(report.markdown())


async def promql_vs_prometheus(db: str, keys: Keys, writer: Writer, report: Report, baseline: Path | None) -> None:
    """``sum by (dc) (rate(x[5m]))`` over 100 counters x 24 h of 10 s samples at step 60 s: tsmesh
    (gRPC PromQueryRange, uncached and cached) beside a local Prometheus (HTTP) on the same data.
    Each tree's query service runs in a process of its own (``--serve``); with ``baseline`` (another
    checkout, e.g. main), both trees answer the same requests, alternately, in the same run."""
    if shutil.which("promtool") is None:
        print("promtool missing (make bench-tools): PromQL comparison skipped", flush=True)
        return
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    md = (("authorization", f"Bearer {keys.token(tenant)}"),)
    end_s = (int(time.time()) // 3600 - 1) * 3600  # recent: Prometheus must keep the blocks
    start_s = end_s - 86_400
    rng = random.Random(13)
    series: list[tuple[str, dict[str, str], list[tuple[int, float]]]] = []
    rows: list[tuple[int, int, float]] = []
    await writer.partitions(start_s * S, end_s * S)
    for i in range(100):
        labels = {"dc": f"dc{i % 4}", "host": f"h{i}"}
        sid = await writer.series(tenant, "x", labels)
        value, points = 0.0, []
        for k in range(0, 86_400, 10):
            value += rng.uniform(0, 10)
            points.append(((start_s + k) * 1000, round(value, 3)))
        series.append(("x", labels, points))
        rows += [(sid, t * 1_000_000, v) for t, v in points]
    await writer.write(tenant, rows)
    await writer.refresh(start_s * S - HOUR, end_s * S + HOUR)  # as ingest's writer keeps them
    await writer.conn.execute("ANALYZE")
    text, start_ms, end_ms, step_ms = "sum by (dc) (rate(x[5m]))", start_s * 1000, end_s * 1000, 60_000
    request = query_pb2.PromQueryRangeRequest(query=text, start_ms=start_ms, end_ms=end_ms, step_ms=step_ms)
    trees = {"this tree": ROOT} | ({"baseline tree": baseline} if baseline else {})
    theirs = LatencyRecorder()
    with tempfile.TemporaryDirectory() as work:
        prometheus = Prometheus(Path(work), Dataset(series, start_ms, end_ms))
        try:
            for label in ("uncached", "cached"):
                servers = {name: await Server.start(tree, db, keys, label) for name, tree in trees.items()}
                try:
                    ours = {name: LatencyRecorder() for name in servers}
                    for i in range(33 if label == "uncached" else 203):
                        # alternate: each engine sees the same machine load
                        if label == "uncached":
                            t = time.perf_counter()
                            await asyncio.to_thread(prometheus.query_range, text, start_ms, end_ms, step_ms)
                            if i >= 3:
                                theirs.record(time.perf_counter() - t)
                        for name, server in servers.items():
                            t = time.perf_counter()
                            await server.stub.PromQueryRange(request, metadata=md, timeout=30)
                            if i >= 3:
                                ours[name].record(time.perf_counter() - t)
                finally:
                    for server in servers.values():
                        await server.stop()
                target = "<= 50 ms and <= 2x Prometheus" if label == "uncached" else "<= 5 ms"
                for name, rec in ours.items():
                    report.add(
                        f"PromQL {label} sum by (dc) (rate[5m]) 100 x 24 h @1m p99 ({name})",
                        rec.summary()["p99"],
                        "ms",
                        "Prometheus p99",
                        theirs.summary()["p99"],
                        target if name == "this tree" else None,
                    )
                if baseline:
                    report.add(
                        f"  PromQL {label} p50, this tree vs baseline tree",
                        ours["this tree"].summary()["p50"],
                        "ms",
                        "baseline tree p50",
                        ours["baseline tree"].summary()["p50"],
                    )
        finally:
            prometheus.close()
    report.add("  Prometheus same query p50", theirs.summary()["p50"], "ms")


class Server:
    """One tree's query service in a process of its own (``--serve``), its sources first on the path."""

    def __init__(self, proc: asyncio.subprocess.Process, channel: grpc.aio.Channel) -> None:
        self.proc = proc
        self.channel = channel
        self.stub = query_pb2_grpc.QueryServiceStub(channel)

    @classmethod
    async def start(cls, tree: Path, db: str, keys: Keys, cache: str) -> Server:
        paths = [tree / "services" / "query" / "src", tree / "libs" / "common" / "src", tree / "libs" / "proto"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in paths), "TSMESH_BENCH_KEY": keys.secret()}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--serve", db, cache, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"query service of {tree} did not start: {line!r}")
        return cls(proc, grpc.aio.insecure_channel(f"127.0.0.1:{int(line.split()[1])}"))

    async def stop(self) -> None:
        await self.channel.close()
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 30)


async def serve(db: str, cache: str) -> None:
    """``--serve DB uncached|cached``: a query service on a free port (printed) until stdin closes."""
    keys = Keys(bytes.fromhex(os.environ["TSMESH_BENCH_KEY"]))
    caches = CacheConfig(l1_max_bytes=0, l2_enabled=False) if cache == "uncached" else CacheConfig()
    auth = Authenticator(AuthenticatorConfig(issuer="tsmesh-auth", audience="tsmesh"), keys, keys)
    comps = build(config(db, caches), auth, create_redis(REDIS_URL), time.time_ns)
    port = await comps.app.start("127.0.0.1", 0)
    print(f"PORT {port}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await comps.app.stop(0.1)


async def dashboard(db: str, keys: Keys, writer: Writer, redis: Redis):
    """100 panels refreshing every 10 virtual seconds; time runs 10x faster than real time."""
    speed, real_seconds = 10.0, float(os.environ.get("TSMESH_BENCH_DASHBOARD_SECONDS", "60"))
    tenant = f"dash-{uuid.uuid4().hex[:8]}"
    md = (("authorization", f"Bearer {keys.token(tenant)}"),)
    t0_real = time.time_ns()
    virtual_start = t0_real

    def clock() -> int:
        return virtual_start + int((time.time_ns() - t0_real) * speed)

    series = []
    for m in range(5):
        for h in range(4):
            series.append(await writer.series(tenant, f"m{m}", {"host": f"h{h}", "dc": f"dc{h % 2}"}))
    history0 = virtual_start - 8 * DAY
    await writer.partitions(history0, virtual_start + DAY)
    rows = [(sid, t, random.random()) for sid in series for t in range(history0 - history0 % MIN, virtual_start, MIN)]
    for i in range(0, len(rows), 100_000):
        await writer.write(tenant, rows[i : i + 100_000])
    await writer.refresh(history0, virtual_start)
    await writer.conn.execute("ANALYZE")
    print(f"dashboard: {len(rows)} history points", flush=True)

    comps, channel = await start(config(db, CacheConfig()), keys, clock)
    stub = query_pb2_grpc.QueryServiceStub(channel)
    windows = {"1h": (HOUR, 10 * S), "24h": (DAY, 5 * MIN), "7d": (7 * DAY, HOUR)}
    panels = []
    for p in range(100):
        name = list(windows)[p % 3]
        matchers = [] if p % 2 else [common_pb2.LabelMatcher(name="host", op=common_pb2.MATCH_OP_REGEX, value="h[01]")]
        panels.append((name, f"m{p % 5}", matchers, ["dc"] if p % 4 == 0 else []))
    stats = comps.engine.stats
    lat = LatencyRecorder()
    errors: dict[str, int] = {}
    stop = time.monotonic() + real_seconds

    async def ingest() -> None:
        while time.monotonic() < stop:
            now = clock()
            await writer.write(tenant, [(sid, now, random.random()) for sid in series])
            await asyncio.sleep(0.2)  # 2 virtual seconds

    async def refresher() -> None:
        while time.monotonic() < stop:
            await asyncio.sleep(6.0)  # a virtual minute
            now = clock()
            await writer.refresh(now - 10 * MIN, now - MIN)

    async def panel(i: int) -> None:
        name, metric, matchers, group_by = panels[i]
        width, step = windows[name]
        await asyncio.sleep(i * 0.01)
        while time.monotonic() < stop:
            now = clock()
            end = now - now % step + step
            t = time.perf_counter()
            try:
                await stub.QueryRange(
                    query(metric, end - width, end, step, group_by=group_by, matchers=matchers), metadata=md, timeout=10
                )
            except grpc.aio.AioRpcError as exc:  # overload answers fast (RESOURCE_EXHAUSTED): count it
                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
            lat.record(time.perf_counter() - t)
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - t)))  # 10 virtual seconds

    lag = LatencyRecorder()

    async def loop_lag() -> None:
        """How late a 20 ms sleep wakes: the time any callback waits for this (shared) event loop."""
        while time.monotonic() < stop:
            t = time.perf_counter()
            await asyncio.sleep(0.02)
            lag.record(time.perf_counter() - t - 0.02)

    activity: list[tuple[int, int, str]] = []  # (active, waiting on a lock, slowest statement) per sample

    async def database_activity() -> None:
        """What the query service's connections do: sampled from pg_stat_activity every 0.25 s."""
        watcher = await asyncpg.connect(f"{PG}/{db}")
        try:
            while time.monotonic() < stop:
                rows = await watcher.fetch(
                    "SELECT state, wait_event_type, now() - query_start AS age, left(query, 60) AS q "
                    "FROM pg_stat_activity WHERE application_name = 'tsmesh-query' AND datname = current_database()"
                )
                busy = [r for r in rows if r["state"] == "active"]
                locked = sum(r["wait_event_type"] == "Lock" for r in busy)
                slowest = max(busy, key=lambda r: r["age"])["q"] if busy else ""
                activity.append((len(busy), locked, " ".join(slowest.split())))
                await asyncio.sleep(0.25)
        finally:
            await watcher.close()

    waits: dict[str, int] = {}

    async def where_handlers_wait() -> None:
        """Samples the innermost query-service frame every awaiting task is stopped at (every 0.1 s)."""
        while time.monotonic() < stop:
            for task in asyncio.all_tasks():
                frames, coro = [], task.get_coro()
                while coro is not None and hasattr(coro, "cr_frame"):  # the awaited chain, outermost first
                    if coro.cr_frame is not None and "tsmesh_query" in coro.cr_frame.f_code.co_filename:
                        frames.append(coro.cr_frame)
                    coro = coro.cr_await
                if frames and "live.py" not in frames[0].f_code.co_filename:
                    top = frames[-1]
                    key = f"{Path(top.f_code.co_filename).name}:{top.f_lineno} {top.f_code.co_name}"
                    waits[key] = waits.get(key, 0) + 1
            await asyncio.sleep(0.1)

    warm_stats = None
    tasks = [asyncio.create_task(ingest()), asyncio.create_task(refresher()), asyncio.create_task(loop_lag())]
    tasks.append(asyncio.create_task(where_handlers_wait()))
    tasks.append(asyncio.create_task(database_activity()))
    tasks += [asyncio.create_task(panel(i)) for i in range(100)]
    await asyncio.sleep(min(10.0, real_seconds / 4))  # the first refresh of each panel fills the cache
    warm_stats = (stats.chunk_hits, stats.chunk_misses, stats.queries, stats.result_hits)
    lat_warm, lag_warm = len(lat), len(lag)
    handled0 = _handler_buckets()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*tasks)
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    handled = [(bound, b - a) for (bound, a), (_, b) in zip(handled0, _handler_buckets(), strict=True)]
    hits = stats.chunk_hits - warm_stats[0]
    misses = stats.chunk_misses - warm_stats[1]
    await channel.close()
    await comps.app.stop(0.1)
    ratio = hits / max(1, hits + misses)
    why = {
        "client p99 after warm-up": lat.tail(lat_warm).summary()["p99"],
        "event-loop lag p99 (client, server, writer share it)": lag.tail(lag_warm).summary()["p99"],
        "server handler p99 (histogram bucket bound)": _bucket_p99(handled),
        "process CPU (cores busy, of 1 usable by one loop)": cpu,
        "query connections active in PostgreSQL (mean, of 8)": sum(a for a, _, _ in activity) / max(1, len(activity)),
        "of which waiting on a lock (mean)": sum(w for _, w, _ in activity) / max(1, len(activity)),
    }
    slowest: dict[str, int] = {}
    for _, _, q in activity:
        slowest[q] = slowest.get(q, 0) + 1
    print("dashboard: slowest running statement, by samples:", sorted(slowest.items(), key=lambda x: -x[1])[:4])
    print("dashboard: where query handlers wait, by samples:", sorted(waits.items(), key=lambda x: -x[1])[:8])
    return ratio, stats.queries - warm_stats[2], lat.summary()["p99"], hits + misses, errors, why


def _handler_buckets() -> list[tuple[float, float]]:
    """(upper bound s, cumulative count) of the query service's QueryRange handler durations, read
    from the process's Prometheus registry (``tsmesh_grpc_server_duration_seconds``)."""
    from prometheus_client import REGISTRY

    method = "/tsmesh.v1.QueryService/QueryRange"
    return [
        (float(sample.labels["le"]), sample.value)
        for metric in REGISTRY.collect()
        if metric.name == "tsmesh_grpc_server_duration_seconds"
        for sample in metric.samples
        if sample.name.endswith("_bucket") and sample.labels.get("method") == method
    ] or [(float("inf"), 0.0)]


def _bucket_p99(cumulative: list[tuple[float, float]]) -> float:
    """The upper bound (ms) of the histogram bucket holding the 99th percentile."""
    total = cumulative[-1][1]
    for bound, count in cumulative:
        if total and count >= 0.99 * total:
            return bound * 1000
    return float("inf")


async def subscribe_latency(db: str, keys: Keys, redis: Redis) -> dict[str, float]:
    comps, channel = await start(config(db, CacheConfig()), keys)
    tenant = f"live-{uuid.uuid4().hex[:8]}"
    md = (("authorization", f"Bearer {keys.token(tenant)}"),)
    stub = query_pb2_grpc.QueryServiceStub(channel)
    await comps.hub.connected.wait()
    stream = stub.Subscribe(query_pb2.SubscribeRequest(selector=common_pb2.Selector(metric="cpu")), metadata=md)
    await stream.read()
    rec = LatencyRecorder()
    seconds, per_batch, rate = DURATION * 2, 5, 1000

    async def receive() -> None:
        while True:
            r = await stream.read()
            if r is grpc.aio.EOF:
                return
            if r.HasField("points"):
                rec.record((time.time_ns() - r.points.accepted_at_ns) / 1e9)

    receiver = asyncio.create_task(receive())
    interval = per_batch / rate
    nxt = time.perf_counter()
    end = nxt + seconds
    while nxt < end:
        pts = [common_pb2.Point(metric="cpu", labels={"host": "a"}, timestamp_ns=time.time_ns(), value=1.0)] * per_batch
        b = common_pb2.PointBatch(
            tenant_id=tenant, points=pts, series_ids=[1] * per_batch, accepted_at_ns=time.time_ns()
        )
        await redis.publish(NS.live_channel(tenant), b.SerializeToString())
        nxt += interval
        await asyncio.sleep(max(0.0, nxt - time.perf_counter()))
    await asyncio.sleep(0.2)
    receiver.cancel()
    stream.cancel()
    await channel.close()
    await comps.app.stop(0.1)
    return rec.summary()


if __name__ == "__main__":
    import argparse

    import uvloop

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["promql", "dashboard"], help="run figure 5 or 3 only")
    parser.add_argument("--baseline-tree", type=Path, help="another checkout (e.g. main) measured beside this one")
    parser.add_argument("--serve", nargs=2, metavar=("DB", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        uvloop.run(serve(*args.serve))
    else:
        uvloop.run(main(args.only, args.baseline_tree))
