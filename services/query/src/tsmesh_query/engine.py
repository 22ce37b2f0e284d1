"""The QueryRange engine: chunked, cached, single-flight evaluation over rollups and raw data.

Per query: split into aligned chunks; read the tenant's data and late generations (one batched
MGET); look chunks up in L1, then L2; compute the missing ones (series resolution, limits, then
one statement per contiguous run of missing chunks at the same resolution, on the same connection,
or, for big runs, cut in time and run concurrently on separate connections: each statement is one
snapshot in which rollups, pending ranges and raw points agree, taken after the call arrived,
like every cached chunk it is combined with); store them; assemble, fill and encode the answer as
wire bytes. Chunks older than the late-arrival window are keyed
on the late generation (moved only by commits of points older than ``LATE_WRITE_SECONDS``), the
others on the data generation (moved by every commit). See ADRs 0301, 0303, 0321 and 0322.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import numpy as np
import numpy.typing as npt
import orjson
from tsmesh.v1 import query_pb2

from tsmesh_common.errors import ResourceExhausted
from tsmesh_query.cache import LruCache, RedisCache
from tsmesh_query.chunk import ChunkData, GroupSeries, group_arrays, reduce_partials, split_range, trim
from tsmesh_query.config import CacheConfig, QueryLimits
from tsmesh_query.fill import build_response
from tsmesh_query.generation import GenerationReader, Generations
from tsmesh_query.metrics import RESOLUTIONS
from tsmesh_query.plan import Chunk, RangeQuery, chunk_ns, last_chunk_end, split
from tsmesh_query.series import SeriesRow, resolve_series
from tsmesh_query.singleflight import SingleFlight
from tsmesh_query.sql import BY_GROUP, BY_SERIES, range_sql, row_mode
from tsmesh_query.store import Database

Response = bytes  # a serialized QueryRangeResponse (``fill.build_response``)
Runs = list[tuple[list[Chunk], ChunkData]]
# A run reading at least this many series-buckets is cut in time into this many statements that run
# concurrently on separate connections (see ``RangeEngine._evaluate``).
PARALLEL_MIN_ROWS = 20_000
PARALLEL_STATEMENTS = 2
RESOLUTION_NAMES: dict[int, str] = {
    query_pb2.RESOLUTION_RAW: "raw",
    query_pb2.RESOLUTION_1M: "1m",
    query_pb2.RESOLUTION_1H: "1h",
}


@dataclass(frozen=True, slots=True)
class _Target:
    """The resolved series of a query: ids, their group index, group names (output label JSON)."""

    ids: list[int]
    groups: list[int]
    names: list[str]
    group_of: dict[int, int]
    one_per_group: bool
    by_id: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]  # sorted ids, their group index


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
        """The serialized answer to ``query`` for ``tenant``; ``max_resolution`` caps rollup use (tests, tools)."""
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
            runs = await self._evaluate(tenant, query, [chunks[i] for i in missing])
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
        response = build_response(query, complete, resolution)
        if keys is not None:
            ttl = self._cfg.l1_immutable_ttl_s if chunks[-1].hi <= cutoff else self._cfg.l1_recent_ttl_s
            if self._results.enabled:
                self._results.put(keys[1], response, len(response) + 256, ttl)
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

    async def _evaluate(self, tenant: str, query: RangeQuery, chunks: list[Chunk]) -> Runs:
        """Each run of adjacent chunks at one resolution with its buckets (one statement per run).

        Series resolution and the statements share one connection, except when a run reads at least
        PARALLEL_MIN_ROWS series-buckets: then, after resolution released its connection, the runs,
        the big ones cut in time into PARALLEL_STATEMENTS pieces, run concurrently on separate
        connections (never holding one while waiting for another), so PostgreSQL uses several cores
        for one large query. Each statement is its own exact snapshot taken after the call arrived
        (ADR 0303), so pieces combine like cached and computed chunks do.
        """

        async def resolve_and_run(
            conn: asyncpg.Connection, timeout: float
        ) -> tuple[_Target, list[list[Chunk]], Runs | None]:
            target = self._target(await resolve_series(conn, timeout, tenant, query.selector, self._limits), query)
            runs = _runs(chunks)
            pieces = [piece for run in runs for piece in self._pieces(run, len(target.ids), query.step)]
            if len(pieces) > len(runs):
                return target, pieces, None
            return target, runs, [await self._statement(conn, timeout, query, target, run) for run in runs]

        target, pieces, done = await self._db.read(resolve_and_run)
        if done is not None:
            return done

        async def piece(run: list[Chunk]) -> tuple[list[Chunk], ChunkData]:
            return await self._db.read(lambda conn, timeout: self._statement(conn, timeout, query, target, run))

        return list(await asyncio.gather(*(piece(run) for run in pieces)))

    def _target(self, series: list[SeriesRow], query: RangeQuery) -> _Target:
        ids, groups, names = self._groups(series, query)
        points = len(names) * query.bucket_count
        if points > self._limits.max_points:
            raise ResourceExhausted(
                "max_points", f"{len(names)} series x {query.bucket_count} buckets exceed {self._limits.max_points}"
            )
        order = np.argsort(np.array(ids, dtype=np.int64))
        by_id = (np.array(ids, dtype=np.int64)[order], np.array(groups, dtype=np.int64)[order])
        return _Target(ids, groups, names, dict(zip(ids, groups, strict=True)), len(names) == len(ids), by_id)

    @staticmethod
    def _pieces(run: list[Chunk], series: int, step: int) -> list[list[Chunk]]:
        """``run`` cut in time at chunk edges into PARALLEL_STATEMENTS pieces if it is big enough."""
        if len(run) < 2 or series * ((run[-1].hi - run[0].lo) // step) < PARALLEL_MIN_ROWS:
            return [run]
        size = -(-len(run) // PARALLEL_STATEMENTS)
        return [run[i : i + size] for i in range(0, len(run), size)]

    async def _statement(
        self, conn: asyncpg.Connection, timeout: float, query: RangeQuery, target: _Target, run: list[Chunk]
    ) -> tuple[list[Chunk], ChunkData]:
        """The buckets of one run of adjacent chunks at one resolution (one statement)."""
        resolution = run[0].resolution
        RESOLUTIONS.labels(RESOLUTION_NAMES[resolution]).inc(len(run))
        merged: dict[str, GroupSeries] = {}
        if target.ids:
            args = (target.ids, target.groups, run[0].lo, run[-1].hi)
            try:
                rows = await conn.fetch(
                    range_sql(resolution, query.aggregation, query.step, target.one_per_group), *args, timeout=timeout
                )
            except asyncpg.NumericValueOutOfRangeError:  # float8 sum() overflowed: sum as numeric instead
                rows = await conn.fetch(
                    range_sql(resolution, query.aggregation, query.step, target.one_per_group, saturating=True),
                    *args,
                    timeout=timeout,
                )
            mode = row_mode(resolution, query.aggregation, query.step, target.one_per_group)
            filled = [row for row in rows if row["groups"] is not None]  # one per row source with buckets
            if filled:
                packed: list[bytes] = [
                    filled[0][i] if len(filled) == 1 else b"".join(row[i] for row in filled) for i in range(4)
                ]
                arrays = (packed[0], packed[1], packed[2], packed[3])
                if mode == BY_SERIES:
                    for key, buckets in group_arrays(*arrays):
                        merged[target.names[target.group_of[key]]] = buckets
                elif mode == BY_GROUP:
                    for key, buckets in group_arrays(*arrays):
                        merged[target.names[key]] = buckets
                else:
                    span = (run[0].lo, run[-1].hi, query.step)
                    groups = len(target.names)
                    for key, buckets in reduce_partials(*arrays, target.by_id, groups, span, query.aggregation):
                        merged[target.names[key]] = buckets
        return run, ChunkData(resolution, merged)

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
