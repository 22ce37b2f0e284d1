"""The QueryRange engine: chunked, cached, single-flight evaluation over rollups and raw data.

Per query: split into aligned chunks; read the tenant's data and late generations (one batched
MGET); look chunks up in L1, then L2; compute the missing ones on one connection (series
resolution, limits, then one statement per contiguous run of missing chunks at the same
resolution: each statement is one snapshot in which rollups, pending ranges and raw points agree,
taken after the call arrived, like every cached chunk it is combined with); store them; assemble
and fill. Chunks older than the late-arrival window are keyed
on the late generation (moved only by commits of points older than ``LATE_WRITE_SECONDS``), the
others on the data generation (moved by every commit). See ADRs 0301 and 0303.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import orjson
from tsmesh.v1 import query_pb2

from tsmesh_common.errors import ResourceExhausted
from tsmesh_query.cache import LruCache, RedisCache
from tsmesh_query.chunk import ChunkData, GroupSeries, from_arrays, split_range, trim
from tsmesh_query.config import CacheConfig, QueryLimits
from tsmesh_query.fill import build_response
from tsmesh_query.generation import GenerationReader, Generations
from tsmesh_query.metrics import RESOLUTIONS
from tsmesh_query.plan import Chunk, RangeQuery, chunk_ns, last_chunk_end, split
from tsmesh_query.series import SeriesRow, resolve_series
from tsmesh_query.singleflight import SingleFlight
from tsmesh_query.sql import keyed_by_series, range_sql
from tsmesh_query.store import Database

Response = query_pb2.QueryRangeResponse
RESOLUTION_NAMES: dict[int, str] = {
    query_pb2.RESOLUTION_RAW: "raw",
    query_pb2.RESOLUTION_1M: "1m",
    query_pb2.RESOLUTION_1H: "1h",
}


@dataclass
class EngineStats:
    """Counters the benchmark reads (Prometheus has the same figures per layer)."""

    queries: int = 0
    result_hits: int = 0
    chunk_hits: int = 0
    chunk_misses: int = 0


def group_key(labels: dict[str, str], group_by: tuple[str, ...] | None) -> str:
    """Canonical JSON of a series' output labels: all of them, or the ``group_by`` ones present."""
    kept = labels if group_by is None else {k: labels[k] for k in group_by if labels.get(k)}
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS).decode()


class RangeEngine:
    """Answers QueryRange for one tenant at a time; shared by every call of the process."""

    def __init__(
        self,
        db: Database,
        limits: QueryLimits,
        cfg: CacheConfig,
        l1: LruCache[bytes],
        results: LruCache[Response],
        l2: RedisCache | None,
        generations: GenerationReader | None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self._db = db
        self._limits = limits
        self._cfg = cfg
        self._l1 = l1
        self._results = results
        self._l2 = l2
        self._generations = generations
        self._clock = clock
        self._flight: SingleFlight[Response] = SingleFlight()
        self.stats = EngineStats()

    async def query_range(self, tenant: str, query: RangeQuery, max_resolution: int | None = None) -> Response:
        """The answer to ``query`` for ``tenant``; ``max_resolution`` caps rollup use (tests, tools)."""
        self.stats.queries += 1
        width = chunk_ns(query, self._cfg.chunks_per_query)
        cutoff = self._clock() - self._cfg.late_window_ns
        recent = last_chunk_end(query, width) > cutoff
        generations = await self._generations.get(tenant) if self._generations is not None else None
        if generations is None:  # unknown: no cache entry can be proved current
            return await self._compute(tenant, query, width, max_resolution, cutoff, None, None)
        suffix = f"g{generations.data}.{generations.late}" if recent else f"i{generations.late}"
        base = f"{tenant}|{query.fingerprint}|{max_resolution}"
        result_key = f"{base}|{query.start}|{query.end}|{query.fill}|{suffix}"
        cached = self._results.get(result_key)
        if cached is not None:
            self.stats.result_hits += 1
            return cached
        return await self._flight.do(
            result_key,
            lambda: self._compute(tenant, query, width, max_resolution, cutoff, generations, (base, result_key)),
        )

    async def _compute(
        self,
        tenant: str,
        query: RangeQuery,
        width: int,
        max_resolution: int | None,
        cutoff: int,
        generations: Generations | None,
        keys: tuple[str, str] | None,
    ) -> Response:
        chunks = split(query, width, max_resolution)
        chunk_keys: list[str | None] = []
        for c in chunks:
            if keys is None or generations is None:
                chunk_keys.append(None)
            else:
                version = f"i{generations.late}" if c.hi <= cutoff else f"g{generations.data}"
                chunk_keys.append(f"{keys[0]}|{c.lo}|{c.hi}|{version}")
        found = await self._lookup(tenant, chunk_keys)
        missing = [i for i, data in enumerate(found) if data is None]
        self.stats.chunk_hits += len(chunks) - len(missing)
        self.stats.chunk_misses += len(missing)
        spans: dict[int, tuple[int, Chunk, Chunk, ChunkData]] = {}  # first index -> run's last index, data
        if missing:
            runs = await self._db.read(
                lambda conn, timeout: self._evaluate(conn, timeout, tenant, query, [chunks[i] for i in missing]),
                snapshot=False,  # each statement is its own exact snapshot (ADR 0303)
            )
            position = 0
            for run, data in runs:
                spans[missing[position]] = (missing[position + len(run) - 1], run[0], run[-1], data)
                position += len(run)
            if self._l1.enabled or self._l2 is not None:
                computed = [
                    piece
                    for run, data in runs
                    for piece in split_range(data.groups, [(c.lo, c.hi) for c in run], data.resolution)
                ]
                await self._store(tenant, chunks, chunk_keys, missing, computed, cutoff)
        complete: list[ChunkData] = []
        index = 0
        while index < len(chunks):  # a computed run is used whole, not split and merged again
            span = spans.get(index)
            if span is not None:
                index, first, last, data = span[0] + 1, span[1], span[2], span[3]
            else:
                first = last = chunks[index]
                maybe, index = found[index], index + 1
                if maybe is None:
                    continue
                data = maybe
            complete.append(
                trim(data, query.start, query.end) if first.lo < query.start or last.hi > query.end else data
            )
        resolution = max((data.resolution for data in complete), default=query_pb2.RESOLUTION_RAW)
        response, size = build_response(query, complete, resolution)
        if keys is not None:
            ttl = self._cfg.l1_immutable_ttl_s if chunks[-1].hi <= cutoff else self._cfg.l1_recent_ttl_s
            if self._results.enabled:
                self._results.put(keys[1], response, size + 256, ttl)
        return response

    async def _lookup(self, tenant: str, keys: list[str | None]) -> list[ChunkData | None]:
        found: list[ChunkData | None] = []
        remote: list[int] = []
        for i, key in enumerate(keys):
            blob = self._l1.get(key) if key is not None else None
            found.append(ChunkData.decode(blob) if blob is not None else None)
            if blob is None and key is not None:
                remote.append(i)
        if remote and self._l2 is not None:
            blobs = await self._l2.get_many(tenant, [keys[i] for i in remote])  # type: ignore[misc]
            for i, blob in zip(remote, blobs, strict=True):
                if blob is not None:
                    found[i] = ChunkData.decode(blob)
                    self._l1.put(keys[i], blob, len(blob), self._cfg.l1_recent_ttl_s)  # type: ignore[arg-type]
        return found

    async def _store(
        self,
        tenant: str,
        chunks: list[Chunk],
        keys: list[str | None],
        missing: list[int],
        computed: list[ChunkData],
        cutoff: int,
    ) -> None:
        remote: list[tuple[str, bytes, int]] = []
        for i, data in zip(missing, computed, strict=True):
            key = keys[i]
            if key is None:
                continue
            immutable = chunks[i].hi <= cutoff
            blob = data.encode()
            self._l1.put(key, blob, len(blob), self._cfg.l1_immutable_ttl_s if immutable else self._cfg.l1_recent_ttl_s)
            remote.append((key, blob, self._cfg.l2_immutable_ttl_s if immutable else self._cfg.l2_recent_ttl_s))
        if remote and self._l2 is not None:
            await self._l2.put_many(tenant, remote)

    async def _evaluate(
        self, conn: asyncpg.Connection, timeout: float, tenant: str, query: RangeQuery, chunks: list[Chunk]
    ) -> list[tuple[list[Chunk], ChunkData]]:
        """Each run of adjacent chunks at one resolution with its buckets (one statement per run)."""
        series = await resolve_series(conn, timeout, tenant, query.selector, self._limits)
        ids, groups, names = self._groups(series, query)
        points = len(names) * query.bucket_count
        if points > self._limits.max_points:
            raise ResourceExhausted(
                "max_points", f"{len(names)} series x {query.bucket_count} buckets exceed {self._limits.max_points}"
            )
        one_per_group = len(names) == len(ids)
        group_of = dict(zip(ids, groups, strict=True))
        out: list[tuple[list[Chunk], ChunkData]] = []
        for run in _runs(chunks):
            resolution = run[0].resolution
            RESOLUTIONS.labels(RESOLUTION_NAMES[resolution]).inc(len(run))
            merged: dict[str, GroupSeries] = {}
            if ids:
                rows = await conn.fetch(
                    range_sql(resolution, query.aggregation, query.step, one_per_group),
                    ids,
                    groups,
                    run[0].lo,
                    run[-1].hi,
                    timeout=timeout,
                )
                by_series = keyed_by_series(resolution, query.step, one_per_group)
                for row in rows:
                    group = group_of[row["g"]] if by_series else row["g"]
                    merged[names[group]] = from_arrays(row["buckets"], row["vals"], row["counts"])
            out.append((run, ChunkData(resolution, merged)))
        return out

    @staticmethod
    def _groups(series: list[SeriesRow], query: RangeQuery) -> tuple[list[int], list[int], list[str]]:
        index: dict[str, int] = {}
        ids: list[int] = []
        groups: list[int] = []
        for row in series:
            key = group_key(row.labels, query.group_by)
            ids.append(row.series_id)
            groups.append(index.setdefault(key, len(index)))
        return ids, groups, list(index)


def _runs(chunks: list[Chunk]) -> list[list[Chunk]]:
    """Maximal runs of adjacent chunks sharing a resolution (one SQL statement each)."""
    runs: list[list[Chunk]] = []
    for c in chunks:
        if runs and runs[-1][-1].hi == c.lo and runs[-1][-1].resolution == c.resolution:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs
