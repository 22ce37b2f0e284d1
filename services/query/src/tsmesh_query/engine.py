"""The QueryRange engine: chunked, cached, single-flight evaluation over rollups and raw data.

Per query: split into aligned chunks; read the tenant's data generation if any chunk is younger
than the late-arrival window; look chunks up in L1, then L2; compute the missing ones in ONE
REPEATABLE READ snapshot (series resolution, limits, then one statement per contiguous run of
missing chunks at the same resolution); store them; assemble and fill. Chunks older than the
late-arrival window are keyed without the generation (immutable), the others with it.
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
from tsmesh_query.chunk import ChunkData, GroupSeries, split_range
from tsmesh_query.config import CacheConfig, QueryLimits
from tsmesh_query.fill import build_response
from tsmesh_query.generation import GenerationReader
from tsmesh_query.metrics import RESOLUTIONS
from tsmesh_query.plan import Chunk, RangeQuery, chunk_ns, split
from tsmesh_query.series import SeriesRow, resolve_series
from tsmesh_query.singleflight import SingleFlight
from tsmesh_query.sql import range_sql
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
        chunks = split(query, chunk_ns(query, self._cfg.chunks_per_query), max_resolution)
        cutoff = self._clock() - self._cfg.late_window_ns
        recent = chunks[-1].hi > cutoff
        generation = None
        if recent and self._generations is not None:
            generation = await self._generations.get(tenant)
        if recent and generation is None:
            return await self._compute(tenant, query, chunks, cutoff, None, None)
        suffix = f"g{generation}" if recent else "i"
        base = f"{tenant}|{query.fingerprint}|{max_resolution}"
        result_key = f"{base}|{query.start}|{query.end}|{query.fill}|{suffix}"
        cached = self._results.get(result_key)
        if cached is not None:
            self.stats.result_hits += 1
            return cached
        return await self._flight.do(
            result_key, lambda: self._compute(tenant, query, chunks, cutoff, generation, (base, result_key))
        )

    async def _compute(
        self,
        tenant: str,
        query: RangeQuery,
        chunks: list[Chunk],
        cutoff: int,
        generation: int | None,
        keys: tuple[str, str] | None,
    ) -> Response:
        chunk_keys: list[str | None] = []
        for c in chunks:
            immutable = c.hi <= cutoff
            if keys is None or (not immutable and generation is None):
                chunk_keys.append(None)
            else:
                chunk_keys.append(f"{keys[0]}|{c.lo}|{c.hi}|{'i' if immutable else f'g{generation}'}")
        found = await self._lookup(tenant, chunk_keys)
        missing = [i for i, data in enumerate(found) if data is None]
        self.stats.chunk_hits += len(chunks) - len(missing)
        self.stats.chunk_misses += len(missing)
        if missing:
            computed = await self._db.read(
                lambda conn, timeout: self._evaluate(conn, timeout, tenant, query, [chunks[i] for i in missing]),
                snapshot=True,
            )
            for i, data in zip(missing, computed, strict=True):
                found[i] = data
            await self._store(tenant, chunks, chunk_keys, missing, computed, cutoff)
        complete = [data for data in found if data is not None]
        resolution = max((data.resolution for data in complete), default=query_pb2.RESOLUTION_RAW)
        response = build_response(query, complete, resolution)
        if keys is not None:
            ttl = self._cfg.l1_immutable_ttl_s if chunks[-1].hi <= cutoff else self._cfg.l1_recent_ttl_s
            self._results.put(keys[1], response, response.ByteSize() + 256, ttl)
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
    ) -> list[ChunkData]:
        series = await resolve_series(conn, timeout, tenant, query.selector, self._limits)
        ids, groups, names = self._groups(series, query)
        points = len(names) * query.bucket_count
        if points > self._limits.max_points:
            raise ResourceExhausted(
                "max_points", f"{len(names)} series x {query.bucket_count} buckets exceed {self._limits.max_points}"
            )
        out: list[ChunkData] = []
        for run in _runs(chunks):
            resolution = run[0].resolution
            RESOLUTIONS.labels(RESOLUTION_NAMES[resolution]).inc(len(run))
            merged: dict[str, GroupSeries] = {}
            if ids:
                rows = await conn.fetch(
                    range_sql(resolution, query.aggregation, query.step),
                    ids,
                    groups,
                    run[0].lo,
                    run[-1].hi,
                    timeout=timeout,
                )
                for row in rows:
                    target = GroupSeries()
                    target.buckets.extend(row["buckets"])
                    target.values.extend(row["vals"])
                    target.counts.extend(row["counts"])
                    merged[names[row["g"]]] = target
            out.extend(split_range(merged, [(c.lo, c.hi) for c in run], resolution))
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
