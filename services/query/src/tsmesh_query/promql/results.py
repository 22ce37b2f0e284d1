"""Whole PromQL answers cached in process, keyed on the tenant's data generation.

The writer moves a tenant's data generation after every commit, so an entry made under an older
generation is never looked up again: an answer is never stale. When the generation is unknown
(Redis down) nothing is cached or served from the cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tsmesh.v1 import query_pb2

from tsmesh_query.cache import LruCache
from tsmesh_query.generation import GenerationReader

ENTRY_OVERHEAD = 256


@dataclass
class ResultStats:
    hits: int = 0
    misses: int = 0


class ResultCache:
    """``answer(tenant, request, compute)``: the cached response to ``request`` or ``compute()``'s."""

    def __init__(
        self, generations: GenerationReader | None, lru: LruCache[query_pb2.PromQueryResponse], ttl_s: float
    ) -> None:
        self._generations = generations
        self._lru = lru
        self._ttl_s = ttl_s
        self.stats = ResultStats()

    async def answer(
        self,
        tenant: str,
        request: query_pb2.PromQueryRequest | query_pb2.PromQueryRangeRequest,
        compute: Callable[[], Awaitable[query_pb2.PromQueryResponse]],
    ) -> query_pb2.PromQueryResponse:
        if not self._lru.enabled or self._generations is None:
            return await compute()
        generations = await self._generations.get(tenant)
        if generations is None:
            return await compute()
        keyed = type(request).FromString(request.SerializeToString())
        keyed.timeout_ms = 0  # the budget does not change the answer
        digest = hashlib.blake2b(keyed.SerializeToString(deterministic=True), digest_size=16).hexdigest()
        key = f"{tenant}|{type(request).__name__}|{digest}|{generations.data}"
        cached = self._lru.get(key)
        if cached is not None:
            self.stats.hits += 1
            return cached
        self.stats.misses += 1
        response = await compute()
        self._lru.put(key, response, response.ByteSize() + ENTRY_OVERHEAD, self._ttl_s)
        return response
