"""Ingest benchmark (``make bench-ingest``): end-to-end points/s vs raw binary COPY, ack latency, rollup lag.

Starts its own broker (tansu), its own PostgreSQL cluster, and ingest processes (one API and
``--writers`` writers, 1 by default: a consumer group sharing the topic's partitions, as ``k8s/``
scales them), then measures in one run:

1. baseline: asyncpg binary COPY (``copy_records_to_table``) of N rows into ``ts.points``;
2. end to end: the same number of points sent as 1,000-point messages on gRPC client streams
   (10,000 series), timed until the writer has committed them all in PostgreSQL;
3. at half the end-to-end rate: p99 latency of a 1,000-point ``WriteBatch`` until Kafka acked, and
   the rollup lag (ack of a probe point -> its 1m rollup bucket is visible; fast-path batches merge
   their rollups in their own transaction, refresh passes only run for pending ranges, ADR 0205).

With ``--prefill-points N`` (``make bench-ingest-big``: 10 million points in 100,000 series), it then
measures end-to-end points/s through ``make run``'s ingest configuration (the ``IngestConfig``
defaults: writer batching, linger, pool; ``TSMESH_ENV=dev``) on a copy of a pre-filled cluster run
with the machine PostgreSQL's durability settings (fsync, synchronous_commit, full_page_writes on;
128 MB shared_buffers). The pre-fill is written by SQL, bypassing ingest, and cached
(``bench/prefill.py``). ``--variant 'label:NAME=V,...'`` adds configurations (``PYTHONPATH=`` another
checkout's ``services/ingest/src`` for a code A/B, ``pg.X=V`` for a PostgreSQL setting of the ingest
role), run interleaved ``--repeat`` times; each phase prints the writer's time in and out of
transactions and the ingest role's ``pg_stat_activity`` samples (``bench/ingest_waits.py``).

CPU seconds per million points of each process (writer, API, PostgreSQL, broker, client) over the
end-to-end phase are printed too: unlike rates, they do not depend on the machine's load.

``python bench/bench_ingest.py --serve`` is the child-process entry point (an ingest process whose
authenticator trusts the key the benchmark generated).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SERIES = 10_000
BATCH = 1_000


class _StaticJwks:
    def __init__(self, keys: list[dict[str, str]]) -> None:
        self.keys = keys

    async def fetch_jwks(self) -> list[dict[str, str]]:
        return self.keys


class _NoIntrospection:
    async def introspect(self, token: str) -> None:
        return None


async def _serve_child() -> None:
    import redis.asyncio as aioredis

    from tsmesh_common.authn import Authenticator, AuthenticatorConfig
    from tsmesh_common.bootstrap import Mesh
    from tsmesh_common.logs import configure_logging
    from tsmesh_common.server import serve
    from tsmesh_ingest.config import IngestConfig
    from tsmesh_ingest.wiring import IngestClients, build

    cfg = IngestConfig.from_env(os.environ)
    configure_logging(cfg.common.service, "WARNING")
    jwk = json.loads(os.environ["TSMESH_BENCH_JWK"])
    authenticator = Authenticator(
        AuthenticatorConfig(issuer="tsmesh-auth", audience="tsmesh"), _StaticJwks([jwk]), _NoIntrospection()
    )
    redis = aioredis.Redis.from_url(cfg.common.redis_url)
    runtime = await build(cfg, IngestClients(redis, Mesh(authenticator)))
    await runtime.start()
    await serve(runtime.app, cfg.common)


def _mint() -> tuple[str, dict[str, str], str]:
    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    kid = "bench"
    jwk = {**json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(key.public_key())), "kid": kid, "alg": "EdDSA"}
    tenant = f"bench-{uuid.uuid4().hex[:8]}"
    now = int(time.time())
    claims = {"iss": "tsmesh-auth", "aud": "tsmesh", "sub": "bench", "tid": tenant, "scope": "write",
              "jti": uuid.uuid4().hex, "iat": now, "exp": now + 3600}  # fmt: skip
    return str(jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": kid})), jwk, tenant


def _requests(rounds: int, base_ns: int, first_round: int = 0, batch: int = BATCH) -> list[bytes]:
    """Serialized WriteRequests of ``batch`` points each: every round gives each of SERIES series one point."""
    from tsmesh.v1 import common_pb2, ingest_pb2

    labels = [{"host": f"h{s % 500}", "series": str(s)} for s in range(SERIES)]
    out = []
    for r in range(first_round, first_round + rounds):
        ts = base_ns + r * 1_000_000
        for start in range(0, SERIES, batch):
            points = [
                common_pb2.Point(metric="bench_metric", labels=labels[s], timestamp_ns=ts, value=float(s + r))
                for s in range(start, min(SERIES, start + batch))
            ]
            out.append(ingest_pb2.WriteRequest(points=points).SerializeToString())
    return out


def _rows(rounds: int, base_ns: int) -> list[tuple[int, int, float]]:
    from tsmesh_ingest.series_id import series_id, to_signed

    ids = [to_signed(series_id("baseline", "bench_metric", [("host", f"h{s % 500}"), ("series", str(s))])) for s in
           range(SERIES)]  # fmt: skip
    return [(ids[s], base_ns + r * 1_000_000, float(s + r)) for r in range(rounds) for s in range(SERIES)]


def _cpu_seconds(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of a process (plus its reaped children's with ``children``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def _pg_cpu_seconds(data_dir: Path) -> float:
    """CPU seconds of a PostgreSQL cluster: the postmaster, its exited children, its live children."""
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = _cpu_seconds(postmaster, children=True)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == postmaster:
                    total += _cpu_seconds(int(entry.name))
            except (OSError, ValueError):
                continue
    return total


def _cpu_snapshot(children: list[subprocess.Popen[bytes]], pg_data: Path, broker: Any) -> dict[str, float]:
    """CPU seconds so far of the writers (all), the API (the last child), PostgreSQL, the broker and
    this client process."""
    return {
        "writer": sum(_cpu_seconds(child.pid) for child in children[:-1]),
        "api": _cpu_seconds(children[-1].pid),
        "postgres": _pg_cpu_seconds(pg_data),
        "tansu": _cpu_seconds(broker._proc.pid),
        "client": time.process_time(),
    }


def _metrics(metrics_port: int) -> str:
    return str(urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode())


def _summed(found: list[tuple[str, str]], total: dict[Any, float], key: Any) -> dict[Any, float]:
    for k, n in found:
        total[key(k)] = total.get(key(k), 0.0) + float(n)
    return total


def _committed_rows(metrics_ports: list[int]) -> float:
    """Rows committed so far by all writers."""
    pattern = r"^tsmesh_ingest_writer_batch_rows_sum ([0-9.e+]+)$"
    return sum(float(n) for port in metrics_ports for n in re.findall(pattern, _metrics(port), re.M))


def _bucket_paths(metrics_ports: list[int]) -> dict[str, float]:
    """1m rollup buckets updated so far by all writers, by path (merge / recompute)."""
    pattern = r'^tsmesh_ingest_rollup_buckets_total\{path="([a-z]+)"\} ([0-9.e+]+)$'
    total: dict[str, float] = {}
    for port in metrics_ports:
        _summed(re.findall(pattern, _metrics(port), re.M), total, str)
    return total


def _histogram(metrics_ports: list[int], name: str) -> dict[float, float]:
    """Cumulative bucket counts of a Prometheus histogram, by upper bound, summed over processes."""
    pattern = rf'^{name}_bucket\{{le="([^"]+)"\}} ([0-9.e+]+)$'
    total: dict[float, float] = {}
    for port in metrics_ports:
        _summed(re.findall(pattern, _metrics(port), re.M), total, float)
    return total


def _quantile(before: dict[float, float], after: dict[float, float], q: float) -> tuple[float, float]:
    """(upper bound of the bucket holding quantile ``q``, count) of what was observed in between."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    return next((b for b, n in zip(bounds, counts, strict=True) if total and n >= q * total), float("nan")), total


async def _wait_committed(metrics_ports: list[int], target: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(_committed_rows, metrics_ports) >= target:
            return time.monotonic()
        await asyncio.sleep(0.1)  # each scrape costs the writer process CPU
    raise TimeoutError(f"the writer did not commit {target:.0f} rows within {timeout}s")


async def _stream_all(channel: Any, token: str, requests: list[bytes], streams: int) -> int:
    method = channel.stream_unary(
        "/tsmesh.v1.IngestService/Write", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    from tsmesh.v1 import ingest_pb2

    async def one(chunk: list[bytes]) -> int:
        async def gen() -> Any:
            for r in chunk:
                yield r

        raw = await method(gen(), metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        return int(ingest_pb2.WriteResponse.FromString(raw).accepted)

    # Streams of at most 50 messages, ``streams`` at a time: each stays far below the server's
    # 30 s deadline cap even on a loaded machine.
    gate = asyncio.Semaphore(streams)

    async def gated(chunk: list[bytes]) -> int:
        async with gate:
            return await one(chunk)

    chunks = [requests[i : i + 50] for i in range(0, len(requests), 50)]
    return sum(await asyncio.gather(*(gated(c) for c in chunks)))


async def _paced_latency(
    channel: Any, token: str, requests: list[bytes], rate_calls: float, duration: float
) -> tuple[Any, int]:
    from harness import LatencyRecorder

    method = channel.unary_unary(
        "/tsmesh.v1.IngestService/WriteBatch", request_serializer=lambda b: b, response_deserializer=lambda b: b
    )
    recorder = LatencyRecorder()
    metadata = (("authorization", f"Bearer {token}"),)
    tasks = []

    async def call(body: bytes) -> None:
        start = time.perf_counter()
        await method(body, metadata=metadata, timeout=10)
        recorder.record(time.perf_counter() - start)

    interval = 1.0 / rate_calls
    begin = time.perf_counter()
    n = 0
    while time.perf_counter() - begin < duration and n < len(requests):
        tasks.append(asyncio.create_task(call(requests[n])))
        n += 1
        await asyncio.sleep(max(0.0, begin + n * interval - time.perf_counter()))
    await asyncio.gather(*tasks)
    return recorder, n


async def _rollup_probes(channel: Any, token: str, tenant: str, dsn: str, duration: float) -> Any:
    import asyncpg
    from harness import LatencyRecorder
    from tsmesh.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc

    from tsmesh_ingest.series_id import series_id, to_signed

    stub = ingest_pb2_grpc.IngestServiceStub(channel)
    recorder = LatencyRecorder()
    conn = await asyncpg.connect(dsn)
    try:
        begin = time.monotonic()
        i = 0
        while time.monotonic() - begin < duration:
            labels = {"probe": str(i)}
            sid = to_signed(series_id(tenant, "bench_probe", labels.items()))
            request = ingest_pb2.WriteRequest(
                points=[common_pb2.Point(metric="bench_probe", labels=labels, timestamp_ns=time.time_ns(), value=1.0)]
            )
            await stub.WriteBatch(request, metadata=(("authorization", f"Bearer {token}"),), timeout=10)
            acked = time.perf_counter()
            while not await conn.fetchval("SELECT count FROM ts.rollup_1m WHERE series_id = $1", sid):
                await asyncio.sleep(0.01)
            recorder.record(time.perf_counter() - acked)
            i += 1
            await asyncio.sleep(0.25)
    finally:
        await conn.close()
    return recorder


async def _start_ingest(
    env: dict[str, str], api_port: int, api_metrics: int, writer_metrics: list[int], log_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """Create the topics of ``env``, start its writers then its API (last), wait until they listen."""
    from throwaway import free_port, wait_for_port

    from tsmesh_ingest.config import IngestConfig
    from tsmesh_ingest.topics import create_topics

    await create_topics(IngestConfig.from_env(env).kafka)
    children = []
    for n, port in enumerate(writer_metrics):
        children.append(_spawn({**env, "TSMESH_INGEST_MODE": "writer", "TSMESH_METRICS_PORT": str(port),
                                "TSMESH_GRPC_PORT": str(free_port())}, log_dir / f"writer{n}.log"))  # fmt: skip
    children.append(_spawn({**env, "TSMESH_INGEST_MODE": "api", "TSMESH_METRICS_PORT": str(api_metrics),
                            "TSMESH_GRPC_PORT": str(api_port)}, log_dir / "api.log"))  # fmt: skip
    await asyncio.to_thread(wait_for_port, api_port, 30)
    for port in writer_metrics:
        await asyncio.to_thread(wait_for_port, port, 30)
    return children


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        child.terminate()
    for child in children:
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--serve"], env=env, stdout=handle, stderr=handle
    )


# The machine's PostgreSQL, which ``make run`` uses, has these (and the defaults otherwise:
# shared_buffers 128MB, max_wal_size 1GB); ThrowawayPostgres turns them off unless told.
MAKE_RUN_PG = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
DIAGNOSTIC_PG = {"log_min_duration_statement": "1000", "log_checkpoints": "on"}


def make_run_env(bench_env: dict[str, str]) -> dict[str, str]:
    """``make run``'s ingest environment (scripts/stack.py ``service_env``): the writer, Kafka and pool
    defaults of ``IngestConfig``, not the benchmark's tuning. The rate limits stay lifted."""
    env = {k: v for k, v in bench_env.items() if not k.startswith("TSMESH_WRITER_")}
    env.pop("TSMESH_KAFKA_SESSION_TIMEOUT_MS", None)
    return {**env, "TSMESH_ENV": "dev"}


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``label:NAME=V,NAME=V`` -> (label, overrides); ``pg.X=V`` sets X for the ingest role (ALTER ROLE)."""
    label, _, rest = text.partition(":")
    overrides = dict(item.split("=", 1) for item in rest.split(",") if item)
    return label, overrides


async def _role_settings(dsn: str, overrides: dict[str, str], reset: bool = False) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        for key in (k for k in overrides if k.startswith("pg.")):
            name = key[3:]
            if not name.replace("_", "").isalnum():
                raise ValueError(f"bad setting name {name!r}")
            if reset:
                await conn.execute(f"ALTER ROLE tsmesh_ingest RESET {name}")
            else:
                await conn.execute(f"ALTER ROLE tsmesh_ingest SET {name} = {overrides[key]!r}")
    finally:
        await conn.close()


async def prefilled_phases(
    bench_env: dict[str, str], token: str, args: argparse.Namespace
) -> list[tuple[str, float, float, dict[str, float]]]:
    """End-to-end points/s through ``make run``'s configuration on a pre-filled database, once per
    variant and repetition, interleaved (A B A B): (label, stored/s, acked/s, writer stages)."""
    import grpc
    from ingest_waits import WaitSampler, stage_delta, stage_seconds
    from prefill import prefilled
    from throwaway import ThrowawayPostgres, free_port

    fill = await asyncio.to_thread(prefilled, args.prefill_points, args.prefill_series)
    variants = [("make run", {}), *(parse_variant(v) for v in args.variant)]
    total = args.prefill_rounds * SERIES
    print(f"pre-filled phases: {fill.points:,} points in {fill.series:,} series already stored; "
          f"{total:,} points per phase, {args.batch:,}-point messages, {args.streams} streams, "
          f"PostgreSQL {MAKE_RUN_PG}", flush=True)  # fmt: skip
    pg = ThrowawayPostgres({**MAKE_RUN_PG, **DIAGNOSTIC_PG}, data_from=fill.data)
    results = []
    try:
        order = [v for _ in range(args.repeat) for v in variants]
        for i, (label, overrides) in enumerate(order):
            env = {**make_run_env(bench_env), **{k: v for k, v in overrides.items() if not k.startswith("pg.")},
                   "TSMESH_DATABASE_URL": pg.dsn("tsmesh_ingest"), "TSMESH_KAFKA_TOPIC": f"bench.big{i}",
                   "TSMESH_KAFKA_DLQ_TOPIC": f"bench.big{i}.dlq", "TSMESH_KAFKA_GROUP": f"bench-big{i}"}  # fmt: skip
            await _role_settings(pg.dsn(), overrides)
            api_port, api_metrics, writer_metrics = free_port(), free_port(), [free_port()]
            log_dir = pg.dir / f"phase{i}"
            log_dir.mkdir()
            children = await _start_ingest(env, api_port, api_metrics, writer_metrics, log_dir)
            channel = grpc.aio.insecure_channel(
                f"127.0.0.1:{api_port}", options=[("grpc.max_send_message_length", 64 * 1024 * 1024)]
            )
            try:
                base_ns = fill.free_from_ns + i * 600_000_000_000
                await _stream_all(channel, token, _requests(1, base_ns - 10_000_000, batch=args.batch), args.streams)
                await _wait_committed(writer_metrics, SERIES, 120)
                committed_before = await asyncio.to_thread(_committed_rows, writer_metrics)
                requests = _requests(args.prefill_rounds, base_ns, batch=args.batch)
                stages_before = await asyncio.to_thread(stage_seconds, writer_metrics)
                async with WaitSampler(pg.dsn()) as sampler:
                    start = time.monotonic()
                    accepted = await _stream_all(channel, token, requests, args.streams)
                    acked = time.monotonic()
                    done = await _wait_committed(writer_metrics, committed_before + total, 600)
                stages = stage_delta(stages_before, await asyncio.to_thread(stage_seconds, writer_metrics))
                stages["wall_s"] = done - start
                rate, ack_rate = total / (done - start), accepted / (acked - start)
                results.append((label, rate, ack_rate, stages))
                rows_per = stages["rows"] / max(1, stages["transactions"])
                print(f"[{label}] end to end {rate:,.0f} points/s (acked at {ack_rate:,.0f}/s); "
                      f"{stages['transactions']:.0f} transactions of {rows_per:,.0f} rows; "
                      f"in transactions {stages['transaction_s']:.1f}s of {stages['wall_s']:.1f}s "
                      f"(points COPY {stages['copy_s']:.1f}s); pg_stat_activity, share of "
                      f"{sampler.samples} samples:", flush=True)  # fmt: skip
                print("\n".join(sampler.table()), flush=True)
            finally:
                await channel.close()
                _stop(children)
                await _role_settings(pg.dsn(), overrides, reset=True)
    finally:
        log = (pg.dir / "log").read_text(errors="replace")
        checkpoints = len(re.findall(r"checkpoint complete", log))
        slow = re.findall(r"duration: ([0-9.]+) ms\s+statement: (.{0,60})", log)
        print(f"PostgreSQL log: {checkpoints} checkpoints completed; {len(slow)} statements over 1 s", flush=True)
        for ms, statement in slow[:10]:
            print(f"  {float(ms):,.0f} ms  {statement}", flush=True)
        pg.destroy()
    return results


async def main(args: argparse.Namespace) -> None:
    rounds, streams, latency_seconds, writers = args.rounds, args.streams, args.latency_seconds, max(1, args.writers)
    import asyncpg
    import grpc
    from harness import Report
    from throwaway import TansuBroker, ThrowawayPostgres, free_port, fresh_redis_namespace

    from tsmesh_ingest.migrate import upgrade
    from tsmesh_ingest.partitions import PartitionManager

    total = rounds * SERIES
    print(f"load average at start: {os.getloadavg()}", flush=True)
    print(f"starting broker and PostgreSQL; {total:,} points per phase", flush=True)
    broker = TansuBroker()
    pg = ThrowawayPostgres()
    children: list[subprocess.Popen[bytes]] = []
    title = f"ingest: {total:,} points, {SERIES:,} series, {BATCH:,}-point messages, {streams} streams"
    report = Report(f"{title}, {writers} writer process{'es' if writers > 1 else ''}")
    try:
        await asyncio.to_thread(upgrade, pg.dsn("tsmesh_ingest"))
        conn = await asyncpg.connect(pg.dsn("tsmesh_ingest"))
        await PartitionManager().ensure_window(conn, 1, 1)
        base_ns = time.time_ns() - 3_600_000_000_000

        rows = _rows(rounds, base_ns)
        start = time.perf_counter()
        await conn.copy_records_to_table("points", schema_name="ts", records=rows, columns=("series_id", "ts", "value"))
        copy_rate = total / (time.perf_counter() - start)
        await conn.execute("TRUNCATE ts.points")
        await conn.execute("VACUUM ANALYZE ts.points")
        del rows
        print(f"baseline COPY: {copy_rate:,.0f} rows/s", flush=True)

        token, jwk, tenant = _mint()
        api_port, api_metrics = free_port(), free_port()
        writer_metrics = [free_port() for _ in range(writers)]
        common = {
            **os.environ,
            "TSMESH_KAFKA_BOOTSTRAP": broker.bootstrap,
            "TSMESH_REDIS_NAMESPACE": fresh_redis_namespace("bench"),
            "TSMESH_DATABASE_URL": pg.dsn("tsmesh_ingest"),
            "TSMESH_BENCH_JWK": json.dumps(jwk),
            "TSMESH_INGEST_POINTS_PER_SECOND": "100000000",
            "TSMESH_INGEST_BURST_POINTS": "100000000",
            "TSMESH_INGEST_NEW_SERIES_PER_SECOND": "100000000",
            "TSMESH_INGEST_BURST_NEW_SERIES": "100000000",
            "TSMESH_WRITER_MIN_ROWS": "5000",
            "TSMESH_WRITER_MAX_ROWS": "100000",
            "TSMESH_WRITER_MAX_WAIT_MS": "100",
            "TSMESH_KAFKA_SESSION_TIMEOUT_MS": "2000",
            "TSMESH_GRPC_PORT": "0",
        }
        children += await _start_ingest(common, api_port, api_metrics, writer_metrics, pg.dir)
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{api_port}", options=[("grpc.max_send_message_length", 8 * 1024 * 1024)]
        )

        warm = _requests(1, base_ns - 10_000_000)
        await _stream_all(channel, token, warm, streams)
        await _wait_committed(writer_metrics, SERIES, 60)
        committed_before = await asyncio.to_thread(_committed_rows, writer_metrics)

        requests = _requests(rounds, base_ns)
        cpu_before = _cpu_snapshot(children, pg.data, broker)
        start_mono = time.monotonic()
        start = time.perf_counter()
        accepted = await _stream_all(channel, token, requests, streams)
        acked = time.perf_counter()
        done = await _wait_committed(writer_metrics, committed_before + total, 300)
        e2e_rate = total / (done - start_mono)
        cpu_after = _cpu_snapshot(children, pg.data, broker)
        cpu_per_million = {k: (cpu_after[k] - cpu_before[k]) * 1_000_000 / total for k in cpu_after}
        ack_rate = accepted / (acked - start)
        del requests
        stored = await conn.fetchval("SELECT count(*) FROM ts.points")
        print(f"end to end: {e2e_rate:,.0f} points/s (acked at {ack_rate:,.0f}/s); {stored:,} rows", flush=True)

        drain_start = time.monotonic()
        while await conn.fetchval("SELECT count(*) FROM ts.rollup_pending") and time.monotonic() - drain_start < 180:
            await asyncio.sleep(0.2)
        catch_up = time.monotonic() - done
        print(f"rollups caught up {catch_up:.1f}s after the last point was committed", flush=True)

        half_calls = max(1.0, e2e_rate / 2 / BATCH)
        latency_requests = _requests(int(half_calls * latency_seconds / (SERIES / BATCH)) + 1, base_ns, rounds)
        lag_name, produce_name = "tsmesh_ingest_rollup_commit_lag_seconds", "tsmesh_ingest_produce_seconds"
        lag_before = await asyncio.to_thread(_histogram, writer_metrics, lag_name)
        paths_before = await asyncio.to_thread(_bucket_paths, writer_metrics)
        produce_before = await asyncio.to_thread(_histogram, [api_metrics], produce_name)
        probes = asyncio.create_task(_rollup_probes(channel, token, tenant, pg.dsn(), latency_seconds))
        recorder, calls = await _paced_latency(channel, token, latency_requests, half_calls, latency_seconds)
        lag = (await probes).summary()
        lag_after = await asyncio.to_thread(_histogram, writer_metrics, lag_name)
        paths = {
            k: v - paths_before.get(k, 0.0) for k, v in (await asyncio.to_thread(_bucket_paths, writer_metrics)).items()
        }
        commit_p50, refreshes = _quantile(lag_before, lag_after, 0.5)
        commit_max, _ = _quantile(lag_before, lag_after, 1.0)
        produce_p99, _ = _quantile(
            produce_before, await asyncio.to_thread(_histogram, [api_metrics], produce_name), 0.99
        )
        lat = recorder.summary()
        await channel.close()
        await conn.close()
        _stop(children)
        children.clear()
        big = await prefilled_phases(common, token, args) if args.prefill_points else []

        report.add("raw asyncpg binary COPY into ts.points", copy_rate, "rows/s")
        report.add("end-to-end (gRPC streams -> Kafka -> writer -> committed)", e2e_rate, "points/s",
                   "raw COPY", copy_rate, ">= 60% and >= 100,000/s")  # fmt: skip
        report.add("acknowledged by ingest (Kafka acks)", ack_rate, "points/s", "raw COPY", copy_rate)
        where = f"{args.prefill_points:,} points / {args.prefill_series:,} series pre-filled"
        for label in dict.fromkeys(r[0] for r in big):
            runs = [r for r in big if r[0] == label]
            rates = sorted(r[1] for r in runs)
            outside = sorted(r[3]["wall_s"] - r[3]["transaction_s"] for r in runs)
            spread = f"median of {len(runs)}, {rates[0]:,.0f}-{rates[-1]:,.0f}" if len(runs) > 1 else "1 run"
            report.add(f"end-to-end, {label}, {where} ({spread})", statistics.median(rates), "points/s",
                       "fresh end-to-end", e2e_rate)  # fmt: skip
            report.add(f"acknowledged, {label} (median)", statistics.median(r[2] for r in runs), "points/s")
            report.add(f"writer outside a transaction per million points, {label} (median)",
                       statistics.median(outside) * 1_000_000 / (args.prefill_rounds * SERIES), "s")  # fmt: skip
        for process, seconds in cpu_per_million.items():
            report.add(f"CPU of {process} per million points, end-to-end phase", seconds, "s")
        report.add(f"WriteBatch 1,000 points p50 at {half_calls * BATCH:,.0f} pts/s", lat["p50"], "ms")
        report.add(f"WriteBatch 1,000 points p99 at {half_calls * BATCH:,.0f} pts/s", lat["p99"], "ms",
                   target="<= 50 ms")  # fmt: skip
        report.add("of which Kafka produce -> acks p99 (<= bucket bound)", produce_p99 * 1000, "ms")
        report.add(f"rollups caught up after the {total:,}-point burst", catch_up, "s")
        if refreshes:  # passes over pending ranges (conflict-path writes only, ADR 0205)
            report.add("rollup lag p50 (refresh commit - points commit, <= bucket bound)", commit_p50, "s")
            report.add("rollup lag max (refresh commit - points commit, <= bucket bound)", commit_max, "s")
        report.add("rollup lag: WriteBatch ack -> its 1m bucket visible, p50", lag["p50"] / 1000, "s")
        report.add("rollup lag: WriteBatch ack -> its 1m bucket visible, max", lag["max"] / 1000, "s",
                   target="< 2 s")  # fmt: skip
        print(f"latency phase: {calls} calls, {lag['count']:.0f} rollup probes, {refreshes:.0f} refreshes, "
              f"1m buckets updated by path {paths}", flush=True)  # fmt: skip
        report.print()
        print(f"load average at end: {os.getloadavg()}", flush=True)
        print()
        print(report.markdown())
    finally:
        _stop(children)
        broker.stop()
        pg.destroy()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="run as an ingest child process")
    parser.add_argument("--rounds", type=int, default=100, help="points per series in the throughput phase")
    parser.add_argument("--streams", type=int, default=4, help="concurrent client streams")
    parser.add_argument("--latency-seconds", type=float, default=15.0)
    parser.add_argument("--writers", type=int, default=1, help="writer processes (one consumer group)")
    parser.add_argument("--prefill-points", type=int, default=0,
                        help="also measure make run's configuration on a database pre-filled with this many points "
                             "(by SQL, bypassing ingest; cached under .tsmesh/bench-prefill/)")  # fmt: skip
    parser.add_argument("--prefill-series", type=int, default=100_000, help="series of the pre-filled database")
    parser.add_argument("--prefill-rounds", type=int, default=100, help="points per series in each pre-filled phase")
    parser.add_argument("--batch", type=int, default=BATCH, help="points per message in the pre-filled phases")
    parser.add_argument("--variant", action="append", default=[],
                        help="another configuration for the pre-filled phases, 'label:NAME=V,...' (pg.X=V: "
                             "ALTER ROLE SET X), interleaved with make run's")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, help="rounds of the interleaved pre-filled phases")
    args = parser.parse_args()
    if args.serve:
        from tsmesh_common.server import run

        run(_serve_child)
    else:
        asyncio.run(main(args))
