"""Acknowledged means storable (ADR 0210): whatever ingest validation accepts, the writer's store
holds. Hypothesis puts every class of awkward content into every string field of a point (and raw
bytes that are not UTF-8 into the wire request, and every int64 timestamp under a window wider than
int64); each request is either refused (INVALID_ARGUMENT, or the point rejected with its index and
field) or its accepted points are written by the real ``PointStore`` into a throwaway database and
read back."""

from __future__ import annotations

import asyncio
import math
import struct
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import grpc
import hypothesis.strategies as st
import ingest_harness
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from ingest_harness import eventually
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.protowire import varint
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.partitions import PartitionManager
from tsmesh_ingest.records import RecordDecoder
from tsmesh_ingest.series_id import SeriesIdCache
from tsmesh_ingest.store import Item, KnownSeries, PointStore
from tsmesh_ingest.validation import Validated, Validator

ts_db = ingest_harness.ts_db
start_ingest = ingest_harness.start_ingest

NOW = 1_700_000_000.0
NOW_NS = int(NOW * 1e9)
TENANT = "t-storable"
# Characters and strings a store is known to be picky about: NUL and the other controls, JSON's
# escapes, noncharacters, the BOM, a non-BMP character, combining marks, the largest code point.
AWKWARD = ["\x00", "\x01", "\x1f", "\x7f", '"', "\\", "\\u0000", "\ufeff", "\ufffe", "\uffff", "\U0001f600", "e\u0301"]
AWKWARD += ["\U0010ffff", "\u2028", "\x85", "ǅ", "\u00a0", " ", "\t\n\r", "%00", "'; --"]
# Byte sequences that are not UTF-8: a lone continuation byte, an overlong '/', an encoded surrogate,
# a truncated sequence, bytes above U+10FFFF and ones that never occur.
NOT_UTF8 = [b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xff", b"\xfe"]
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


def awkward_text(max_size: int = 40) -> st.SearchStrategy[str]:
    plain = st.text(st.characters(codec="utf-8"), max_size=max_size)
    return st.builds(lambda a, b, c: a + b + c, plain, st.sampled_from(AWKWARD), plain) | plain


def identifier() -> st.SearchStrategy[str]:
    return st.from_regex(r"[a-zA-Z_][a-zA-Z0-9_]{0,20}", fullmatch=True)


def around(limit: int, strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Strings of ``strategy``'s characters repeated to about ``limit`` characters (or bytes, for
    characters of several UTF-8 bytes): either side of a length limit."""
    return st.builds(lambda text, n: (text * n)[:n], strategy.filter(bool), st.integers(limit - 8, limit + 8))


class Harness:
    """A validator and the writer's store on the throwaway database, driven from Hypothesis's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: Any, validator: Validator) -> None:
        self.loop = loop
        self.pool = pool
        self.validator = validator
        self.store = PointStore(pool, PartitionManager(), KnownSeries())
        self.decoder = RecordDecoder()
        self.refused = self.stored = 0

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def check(self, wire: bytes) -> Validated | None:
        """Validate ``wire``; store and read back what was accepted; None when refused outright."""
        try:
            result = self.validator.validate_request(TENANT, wire)
        except InvalidArgument as exc:
            assert exc.field.startswith("points")
            self.refused += 1
            return None
        for error in result.errors:
            assert error.field and error.reason
        self.refused += len(result.errors)
        if not result.accepted:
            return result
        batch = common_pb2.PointBatch(tenant_id=TENANT, points=result.points, series_ids=result.series_ids)
        item = self.decoder.decode(batch.SerializeToString())
        assert isinstance(item, Item), item
        assert self.run(self.store.write([item])) == result.accepted
        self.run(self._read_back(result))
        self.stored += result.accepted
        return result

    async def _read_back(self, result: Validated) -> None:
        async with self.pool.acquire() as conn:
            for point, sid in zip(result.points, result.series_ids, strict=True):
                signed = sid - (1 << 64) if sid >= 1 << 63 else sid
                series = await conn.fetchrow("SELECT metric, labels::text FROM ts.series WHERE series_id = $1", signed)
                assert series is not None
                assert (series["metric"], orjson.loads(series["labels"])) == (point.metric, dict(point.labels))
                values = await conn.fetch(
                    "SELECT value FROM ts.points WHERE series_id = $1 AND ts = $2", signed, point.timestamp_ns
                )
                assert len(values) == 1
                stored = values[0]["value"]
                assert stored == point.value or (math.isnan(stored) and math.isnan(point.value))


async def _with_harness(ts_db: Any, limits: ValidationLimits, body: Callable[[Harness], None]) -> Harness:
    pool = await asyncpg.create_pool(ts_db.dsn("tsmesh_ingest"), min_size=1, max_size=2)
    try:
        harness = Harness(asyncio.get_running_loop(), pool, Validator(limits, SeriesIdCache(), clock=lambda: NOW))
        await asyncio.to_thread(body, harness)
        return harness
    finally:
        await pool.close()


def _wire(*points: bytes) -> bytes:
    return b"".join(b"\x0a" + varint(len(p)) + p for p in points)


async def test_a_nul_in_a_label_value_is_refused_with_its_index_and_nothing_is_acknowledged() -> None:
    # The reproduction: two points acknowledged, one of them never storable (jsonb has no \u0000).
    validator = Validator(ValidationLimits(), SeriesIdCache(), clock=lambda: NOW)
    poisoned = common_pb2.Point(metric="cpu", labels={"host": "a\x00b"}, timestamp_ns=NOW_NS, value=1.0)
    result = validator.validate_request(TENANT, _wire(poisoned.SerializeToString(), poisoned.SerializeToString()))
    assert result.accepted == 0
    assert [(e.index, e.field) for e in result.errors] == [(0, "labels"), (1, "labels")]
    assert "NUL" in result.errors[0].reason and result.reasons == ["invalid_label_value"] * 2


async def test_through_the_service_the_clean_points_are_stored_and_the_poisoned_ones_refused(
    ts_db: Any, start_ingest: Any, tenant_id: str
) -> None:
    ingest = await start_ingest(ts_db)
    now = time.time_ns()
    points = [
        common_pb2.Point(metric="cpu", labels={"host": "a"}, timestamp_ns=now, value=1.0),
        common_pb2.Point(metric="cpu", labels={"host": "a\x00b"}, timestamp_ns=now, value=2.0),
        common_pb2.Point(metric="cpu", labels={"host": "b"}, timestamp_ns=now, value=3.0),
    ]
    answer = await ingest.write(tenant_id, points)
    assert (answer.accepted, answer.rejected) == (2, 1)
    assert [(e.index, e.field) for e in answer.errors] == [(1, "labels")]

    async def stored() -> list[Any]:
        rows = await ingest.fetch("SELECT value FROM ts.points ORDER BY value")
        return rows if len(rows) == 2 else []

    assert [r["value"] for r in await eventually(stored)] == [1.0, 3.0]
    # Bytes that are not UTF-8 refuse the whole request, naming the point and the field.
    raw = ingest.channel.unary_unary(
        "/tsmesh.v1.IngestService/WriteBatch",
        request_serializer=None,
        response_deserializer=ingest_pb2.WriteResponse.FromString,
    )
    bad = points[0].SerializeToString().replace(b"\x01a", b"\x01\xff")
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await raw(_wire(points[2].SerializeToString(), bad), metadata=ingest.auth(tenant_id), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "points[1].labels.host: not valid UTF-8"


@given(
    metric=identifier() | awkward_text() | around(200, identifier()),
    labels=st.dictionaries(
        identifier() | awkward_text(20) | around(128, identifier()),
        awkward_text() | around(1024, st.text(max_size=3)) | around(256, st.sampled_from(["é", "€", "\U0001f600"])),
        max_size=3,
    ),
)
@SETTINGS
def _identity_property(harness: Harness, metric: str, labels: dict[str, str]) -> None:
    wire = common_pb2.Point(metric=metric, labels=labels, timestamp_ns=NOW_NS, value=1.5).SerializeToString()
    harness.check(_wire(wire))


async def test_every_string_field_with_awkward_content_is_refused_or_stored(ts_db: Any) -> None:
    harness = await _with_harness(ts_db, ValidationLimits(), _identity_property)
    assert harness.refused and harness.stored  # both outcomes were exercised


@given(
    field=st.sampled_from(["metric", "name", "value"]),
    bad=st.sampled_from(NOT_UTF8),
    name=identifier(),
    clean=st.booleans(),
)
@SETTINGS
def _utf8_property(harness: Harness, field: str, bad: bytes, name: str, clean: bool) -> None:
    # A valid point first (with ``clean`` its identity is cached first: the walk's fast path).
    marker = "\u0394"  # replaced by the invalid sequence on the wire
    good = common_pb2.Point(metric="m", labels={name: "v"}, timestamp_ns=NOW_NS, value=1.0).SerializeToString()
    metric = "m" + marker if field == "metric" else "m"
    label = name + marker if field == "name" else name
    value = "v" + marker if field == "value" else "v"
    poisoned = _rebuild(metric, label, value, marker, bad)
    if clean:
        harness.check(_wire(good))
    result = harness.check(_wire(good, poisoned))
    assert result is None  # the whole request is refused, nothing of it acknowledged


def _rebuild(metric: str, label: str, value: str, marker: str, bad: bytes) -> bytes:
    """A point's wire bytes with ``marker`` in its string fields replaced by ``bad`` (lengths fixed)."""

    def string(number: int, text: str) -> bytes:
        data = text.encode().replace(marker.encode(), bad)
        return bytes([number << 3 | 2]) + varint(len(data)) + data

    entry = string(1, label) + string(2, value)
    return (
        string(1, metric)
        + b"\x12"
        + varint(len(entry))
        + entry
        + b"\x18"
        + varint(NOW_NS)
        + b"\x21"
        + struct.pack("<d", 2.0)
    )


async def test_strings_that_are_not_utf8_on_the_wire_are_refused(ts_db: Any) -> None:
    harness = await _with_harness(ts_db, ValidationLimits(), _utf8_property)
    assert harness.refused


@given(
    ts=st.integers(-(2**63), 2**63 - 1) | st.sampled_from([-(2**63), 2**63 - 1, 0, -1, NOW_NS]),
    value=st.floats()
    | st.sampled_from([math.nan, math.inf, -math.inf, struct.unpack("<d", b"\x02\0\0\0\0\0\xf0\x7f")[0]]),
)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def _sample_property(harness: Harness, ts: int, value: float) -> None:
    wire = common_pb2.Point(metric="m", labels={"a": "b"}, timestamp_ns=ts, value=value).SerializeToString()
    harness.check(_wire(wire))


async def test_every_timestamp_and_value_a_wide_open_window_accepts_is_stored(ts_db: Any) -> None:
    # The widest configuration: a window past both ends of int64, non-finite values (and the
    # Prometheus stale marker's NaN) allowed.
    limits = ValidationLimits(allow_non_finite=True, max_past_seconds=2**40, max_future_seconds=2**40)
    harness = await _with_harness(ts_db, limits, _sample_property)
    assert harness.stored
