"""QueryCache: hits of the current generation, one upstream call for identical concurrent misses."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from tsmesh.v1 import query_pb2

from tsmesh_gateway.querycache import QueryCache


class Cache:
    """The micro-cache's interface over a dict (pure logic: no Redis)."""

    def __init__(self, generation: int | None) -> None:
        self.generation_value = generation
        self.store: dict[tuple[str, bytes, int], bytes] = {}

    def current(self, tenant: str) -> int | None:
        return self.generation_value

    async def generation(self, tenant: str) -> int | None:
        return self.generation_value

    def get(self, tenant: str, key: bytes, generation: int) -> bytes | None:
        return self.store.get((tenant, key, generation))

    def put(self, tenant: str, key: bytes, generation: int, body: bytes) -> None:
        self.store[(tenant, key, generation)] = body

    def gzipped(self, tenant: str, key: bytes, body: bytes) -> bytes:
        return b"gz:" + body


class Query:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def unary(self, method: Any, message: Any, **kwargs: Any) -> Any:
        self.calls += 1
        await self.release.wait()
        return query_pb2.LabelValuesResponse(values=["a", "b"])


def make(generation: int | None) -> tuple[QueryCache, Cache, Query]:
    cache, query = Cache(generation), Query()
    stub = SimpleNamespace(LabelValues="LabelValues")
    deps: Any = SimpleNamespace(
        cache=cache, upstreams=SimpleNamespace(query=query, query_stub=stub), cfg=SimpleNamespace(max_json_depth=32)
    )
    return QueryCache(deps), cache, query


CALLER: Any = SimpleNamespace(principal=SimpleNamespace(tenant_id="t1"), authorization="Bearer x")
RAW = b'{"label":"host"}'


async def test_concurrent_misses_share_one_call_then_hit() -> None:
    queries, _, query = make(generation=3)
    handler = queries.handlers()[("POST", "/v1/labels/values")]
    first = asyncio.ensure_future(handler(CALLER, RAW, False))
    second = asyncio.ensure_future(handler(CALLER, RAW, False))
    await asyncio.sleep(0)
    query.release.set()
    answers = await asyncio.gather(first, second)
    assert sorted(a[2] for a in answers) == ["miss", "shared"]
    assert answers[0][0] == b'{"values":["a","b"]}'
    assert await handler(CALLER, RAW, False) == (b'{"values":["a","b"]}', False, "hit")
    assert query.calls == 1


async def test_unknown_generation_bypasses_the_cache() -> None:
    queries, cache, query = make(generation=None)
    query.release.set()
    handler = queries.handlers()[("POST", "/v1/labels/values")]
    assert (await handler(CALLER, RAW, False))[2] == "bypass"
    assert (await handler(CALLER, RAW, False))[2] == "bypass"
    assert query.calls == 2 and not cache.store


def test_every_cached_route_has_a_handler() -> None:
    queries, _, _ = make(generation=1)
    assert set(queries.handlers()) == {
        ("GET", "/v1/query/range"),
        ("POST", "/v1/query/range"),
        ("POST", "/v1/query/latest"),
        ("POST", "/v1/series"),
        ("POST", "/v1/labels/values"),
    }
