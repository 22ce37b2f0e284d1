"""Validated range queries, their split into aligned chunks, and the resolution of each chunk.

Buckets are ``[k*step, (k+1)*step)``, aligned to the Unix epoch, restricted to ``[start, end)``.
Chunks are aligned to multiples of ``chunk_ns`` (itself a multiple of ``step``), so a sliding
window shares every chunk but its edges with the previous refresh (Mimir's query-frontend split).
A chunk is served from the coarsest rollup that answers it exactly: the step and both chunk
bounds must be multiples of the rollup's bucket width.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tsmesh.v1 import query_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits
from tsmesh_query.selectors import MAX_NAME_LENGTH, Selector, parse_selector

MINUTE_NS = 60 * 1_000_000_000
HOUR_NS = 60 * MINUTE_NS
RESOLUTION_WIDTH: dict[int, int] = {query_pb2.RESOLUTION_1H: HOUR_NS, query_pb2.RESOLUTION_1M: MINUTE_NS}
MAX_GROUP_BY = 16
AGGREGATIONS = {
    query_pb2.AGGREGATION_UNSPECIFIED: "avg",
    query_pb2.AGGREGATION_AVG: "avg",
    query_pb2.AGGREGATION_MIN: "min",
    query_pb2.AGGREGATION_MAX: "max",
    query_pb2.AGGREGATION_SUM: "sum",
    query_pb2.AGGREGATION_COUNT: "count",
    query_pb2.AGGREGATION_FIRST: "first",
    query_pb2.AGGREGATION_LAST: "last",
}
FILLS = {
    query_pb2.FILL_UNSPECIFIED: "none",
    query_pb2.FILL_NONE: "none",
    query_pb2.FILL_NULL: "null",
    query_pb2.FILL_PREVIOUS: "previous",
    query_pb2.FILL_LINEAR: "linear",
}


@dataclass(frozen=True, slots=True)
class RangeQuery:
    """A validated QueryRange request; ``fingerprint`` names everything but the time range."""

    selector: Selector
    start: int
    end: int
    step: int
    aggregation: str
    group_by: tuple[str, ...] | None
    fill: str
    fingerprint: str

    @property
    def first_bucket(self) -> int:
        return self.start - self.start % self.step

    @property
    def last_bucket(self) -> int:
        return (self.end - 1) - (self.end - 1) % self.step

    @property
    def bucket_count(self) -> int:
        return (self.last_bucket - self.first_bucket) // self.step + 1


@dataclass(frozen=True, slots=True)
class Chunk:
    """A slice ``[lo, hi)`` of a query, served at one resolution."""

    lo: int
    hi: int
    resolution: int


def parse_range(request: query_pb2.QueryRangeRequest, limits: QueryLimits) -> RangeQuery:
    """Validate a QueryRange request; every error names its field or limit."""
    selector = parse_selector(request.selector, limits)
    if request.step_ns <= 0:
        raise InvalidArgument("step_ns", "must be positive")
    if request.start_ns < 0:
        raise InvalidArgument("start_ns", "must not be negative")
    if request.end_ns <= request.start_ns:
        raise InvalidArgument("end_ns", "must be after start_ns")
    if request.aggregation not in AGGREGATIONS:
        raise InvalidArgument("aggregation", "unknown aggregation")
    if request.fill not in FILLS:
        raise InvalidArgument("fill", "unknown fill")
    if len(request.group_by) > MAX_GROUP_BY:
        raise InvalidArgument("group_by", f"at most {MAX_GROUP_BY} labels")
    for i, name in enumerate(request.group_by):
        if not name or len(name) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"group_by[{i}]", f"must be 1..{MAX_NAME_LENGTH} characters")
    group_by = tuple(dict.fromkeys(request.group_by)) if request.group_by else None
    aggregation = AGGREGATIONS[request.aggregation]
    fill = FILLS[request.fill]
    first = request.start_ns - request.start_ns % request.step_ns
    buckets = (request.end_ns - 1 - first) // request.step_ns + 1
    if buckets > limits.max_buckets:
        raise InvalidArgument("step_ns", f"{buckets} buckets exceed max_buckets={limits.max_buckets}")
    digest = hashlib.blake2b(digest_size=12)
    digest.update(f"{selector.fingerprint}|{request.step_ns}|{aggregation}|{group_by!r}".encode())
    return RangeQuery(
        selector, request.start_ns, request.end_ns, request.step_ns, aggregation, group_by, fill, digest.hexdigest()
    )


def chunk_ns(query: RangeQuery, chunks_per_query: int) -> int:
    """Chunk width: a power-of-two number of steps giving about ``chunks_per_query`` chunks.

    It depends only on the window length and step, so a sliding window keeps its chunk grid.
    """
    steps = max(1, -(-(query.end - query.start) // query.step) // chunks_per_query)
    return query.step * (1 << (steps - 1).bit_length())


def resolution_for(lo: int, hi: int, step: int, cap: int | None = None) -> int:
    """The coarsest resolution (at most ``cap``) whose buckets tile ``[lo, hi)`` and each step bucket."""
    if cap == query_pb2.RESOLUTION_RAW:
        return cap
    for resolution, width in RESOLUTION_WIDTH.items():
        if cap is not None and width > RESOLUTION_WIDTH[cap]:
            continue
        if step % width == 0 and lo % width == 0 and hi % width == 0:
            return resolution
    return query_pb2.RESOLUTION_RAW


def last_chunk_end(query: RangeQuery, width: int) -> int:
    """Where the last chunk of ``split(query, width)`` ends, without building the chunks."""
    if query.start % query.step == 0 and query.end % query.step == 0:
        return -(-query.end // width) * width
    return query.end


def split(query: RangeQuery, width: int, max_resolution: int | None = None) -> list[Chunk]:
    """The aligned chunks covering the query, each with its resolution.

    When both ends of the query are step-aligned, every chunk is a whole cell of the chunk grid
    (the edge chunks overhang the query and are trimmed after lookup): a sliding window then
    reuses its edge chunks too. Otherwise the edge chunks are clipped to the query, because a
    bucket cut by an unaligned end has a value of its own.
    """
    chunks: list[Chunk] = []
    edge = query.start - query.start % width
    whole = query.start % query.step == 0 and query.end % query.step == 0
    while edge < query.end:
        lo, hi = (edge, edge + width) if whole else (max(edge, query.start), min(edge + width, query.end))
        chunks.append(Chunk(lo, hi, resolution_for(lo, hi, query.step, max_resolution)))
        edge += width
    return chunks
