"""Pure logic of ingest: series ids, validation, adaptive batching, COPY encoding, config."""

from __future__ import annotations

import importlib
import struct

import pytest
from ingest_harness import point
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.config import ConfigError
from tsmesh_common.errors import InvalidArgument
from tsmesh_common.protowire import varint
from tsmesh_ingest.batching import AdaptiveBatcher
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.records import Poison, RecordDecoder
from tsmesh_ingest.series_id import SeriesIdCache, series_id, signed_array, to_signed, to_unsigned
from tsmesh_ingest.store import Item, KnownSeries, columns_of, copy_payload
from tsmesh_ingest.validation import Validator

NOW = 1_700_000_000.0
NOW_NS = int(NOW * 1e9)


def test_series_id_is_stable_documented_and_order_independent() -> None:
    # Test vectors of docs/series-id.md: changing them breaks every stored series.
    assert series_id("acme", "cpu_usage", [("host", "a"), ("dc", "eu")]) == 2918142529141592577
    assert series_id("acme", "cpu_usage", [("dc", "eu"), ("host", "a")]) == 2918142529141592577
    assert series_id("acme", "cpu_usage", []) == 17392142558254288291
    assert series_id("other", "cpu_usage", []) != series_id("acme", "cpu_usage", [])
    # Length prefixes keep field boundaries unambiguous.
    assert series_id("t", "m", [("ab", "c")]) != series_id("t", "m", [("a", "bc")])


def test_signed_and_unsigned_forms_round_trip() -> None:
    for value in (0, 1, 2**63 - 1, 2**63, 2**64 - 1, 17392142558254288291):
        assert to_unsigned(to_signed(value)) == value
        assert -(2**63) <= to_signed(value) < 2**63
    assert list(signed_array([2**64 - 1, 5])) == [-1, 5]


def test_series_cache_is_bounded_and_counts_misses() -> None:
    cache = SeriesIdCache(max_entries=2)
    for i in range(5):
        cache.get("t", f"m{i}", ())
    cache.get("t", "m4", ())
    assert len(cache) == 2 and cache.misses == 5


def _validator(**limits: object) -> Validator:
    return Validator(ValidationLimits(**limits), SeriesIdCache(), clock=lambda: NOW)  # type: ignore[arg-type]


def test_validator_accepts_non_finite_values_unless_configured_not_to() -> None:
    nan = [point("m", NOW_NS, float("nan")), point("m", NOW_NS + 1, float("-inf"))]
    assert len(_validator(allow_non_finite=False).validate("t", nan).errors) == 2
    assert len(_validator().validate("t", nan).points) == 2


def test_validator_time_window_and_label_checks() -> None:
    v = _validator(max_past_seconds=60, max_future_seconds=10, max_labels=2)
    result = v.validate(
        "t",
        [
            point("m", NOW_NS - 61 * 10**9, 1),
            point("m", NOW_NS + 11 * 10**9, 1),
            point("m", NOW_NS - 59 * 10**9, 1, a="1", b="2"),
            point("m", NOW_NS, 1, a="1", b="2", c="3"),
            point("m", NOW_NS, 1, a="é" * 512),
            point("m", NOW_NS, 1, a="é" * 513),
        ],
        base_index=100,
    )
    assert [(e.index, e.field) for e in result.errors] == [
        (100, "timestamp_ns"),
        (101, "timestamp_ns"),
        (103, "labels"),
        (105, "labels"),
    ]
    assert result.series_ids == [series_id("t", "m", [("a", "1"), ("b", "2")]), series_id("t", "m", [("a", "é" * 512)])]


def test_request_limits_name_the_field() -> None:
    v = _validator(max_points_per_request=2, max_request_bytes=1024)
    with pytest.raises(InvalidArgument) as many:
        v.validate_request("t", ingest_pb2.WriteRequest(points=[point("m", 1, 1)] * 3).SerializeToString())
    assert many.value.field == "points"
    with pytest.raises(InvalidArgument, match="bytes"):
        v.validate_request("t", ingest_pb2.WriteRequest(points=[point("m" * 2000, 1, 1)]).SerializeToString())


def test_adaptive_batcher_grows_under_lag_and_shrinks_when_idle() -> None:
    b = AdaptiveBatcher(1000, 8000, 0.1)
    for _ in range(5):
        b.observe(b.target, lagging=True)
    assert b.target == 8000
    b.observe(100, lagging=False)
    b.observe(100, lagging=False)
    assert b.target == 2000
    for _ in range(5):
        b.observe(10, lagging=False)
    assert b.target == 1000
    b.observe(500, lagging=True)
    assert b.target == 1000
    with pytest.raises(ValueError):
        AdaptiveBatcher(10, 5, 1.0)


def test_copy_payload_is_postgres_binary_copy() -> None:
    data = copy_payload([-1, 2], [10, 20], [1.5, -2.0])
    assert data.startswith(b"PGCOPY\n\xff\r\n\x00") and data.endswith(b"\xff\xff")
    body = data[19:-2]
    row = struct.Struct(">hiqiqid")
    assert [row.unpack_from(body, i * row.size) for i in range(2)] == [
        (3, 8, -1, 8, 10, 8, 1.5),
        (3, 8, 2, 8, 20, 8, -2.0),
    ]


def test_columns_group_pending_ranges_by_series_and_hour_and_find_new_series() -> None:
    hour = 3600 * 10**9
    pts = [point("m", hour * 10 + 5, 1, a="x"), point("m", hour * 10 + 1, 2, a="x"), point("m", hour * 11, 3, a="x")]
    ids = [series_id("t", "m", [("a", "x")])] * 3
    batch = common_pb2.PointBatch(tenant_id="t", points=pts, series_ids=ids)
    known = KnownSeries()
    cols = columns_of([Item("t", batch, signed_array(ids))], known)
    sid = to_signed(ids[0])
    assert cols.pending == {(sid, 10): [hour * 10 + 1, hour * 10 + 5], (sid, 11): [hour * 11, hour * 11]}
    assert cols.new_series == {sid: ("t", "m", '{"a":"x"}')}
    known.add({sid: "t"})
    assert columns_of([Item("t", batch, signed_array(ids))], known).new_series == {}


def test_decoder_refuses_garbage_and_forged_series_ids() -> None:
    decoder = RecordDecoder()
    assert isinstance(decoder.decode(b"\xff\xff"), Poison)
    good = common_pb2.PointBatch(tenant_id="a", points=[point("m", 1, 1)], series_ids=[series_id("a", "m", [])])
    assert isinstance(decoder.decode(good.SerializeToString()), Item)
    forged = common_pb2.PointBatch(tenant_id="b", points=[point("m", 1, 1)], series_ids=[series_id("a", "m", [])])
    poison = decoder.decode(forged.SerializeToString())
    assert isinstance(poison, Poison) and poison.code == "series_id_mismatch"
    short = common_pb2.PointBatch(tenant_id="a", points=[point("m", 1, 1)])
    assert isinstance(decoder.decode(short.SerializeToString()), Poison)


def test_config_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="TSMESH_INGEST_MODE"):
        IngestConfig.from_env({"TSMESH_INGEST_MODE": "both"})
    with pytest.raises(ConfigError, match="TSMESH_INGEST_TENANT_LIMITS"):
        IngestConfig.from_env({"TSMESH_INGEST_TENANT_LIMITS": "[1]"})
    cfg = IngestConfig.from_env({"TSMESH_INGEST_TENANT_LIMITS": '{"acme": {"points_per_second": 5}}'})
    assert cfg.limit_overrides["acme"].points_per_second == 5
    assert cfg.limit_overrides["acme"].new_series_per_second == cfg.limits.new_series_per_second == 1_000
    with pytest.raises(ConfigError, match=r"TSMESH_INGEST_TENANT_LIMITS.*'acme'.*new_series_per_second"):
        IngestConfig.from_env({"TSMESH_INGEST_TENANT_LIMITS": '{"acme": {"new_series_per_second": 0}}'})
    with pytest.raises(ConfigError, match="TSMESH_INGEST_BURST_NEW_SERIES"):
        IngestConfig.from_env({"TSMESH_INGEST_BURST_NEW_SERIES": "0"})
    with pytest.raises(ConfigError, match="TSMESH_INGEST_UNCHECKED_NEW_SERIES"):
        IngestConfig.from_env({"TSMESH_INGEST_UNCHECKED_NEW_SERIES": "-1"})
    assert not cfg.kafka.idempotence
    prod = IngestConfig.from_env(
        {
            "TSMESH_ENV": "production",
            "TSMESH_DATABASE_URL": "postgresql://x@db/tsmesh",
            "TSMESH_REDIS_URL": "redis://r:6379/0",
        }
    )
    assert prod.kafka.idempotence


def test_records_built_from_point_bytes_equal_upbs_own_point_batches() -> None:
    from tsmesh_ingest.config import KafkaConfig
    from tsmesh_ingest.producer import PointProducer, encode_point_batch

    def framed(p: common_pb2.Point) -> bytes:
        return varint(p.ByteSize()) + p.SerializeToString()

    pts = [point("m", NOW_NS + i, v, host=f"h{i % 3}", dc="eu") for i, v in enumerate([1.5, 0.0, -0.0, 7.0] * 50)]
    pts.append(point("long_" + "x" * 150, NOW_NS, 2.0, **{f"l{i}": "v" * 100 for i in range(3)}))
    ids = [series_id("t", p.metric, p.labels.items()) for p in pts]
    raws = [framed(p) for p in pts]
    batch = common_pb2.PointBatch(tenant_id="t", points=pts, series_ids=ids, accepted_at_ns=123)
    # Same message (map entries may serialize in another order, so bytes are compared message-wise).
    assert common_pb2.PointBatch.FromString(encode_point_batch("t", raws, ids, 123)) == batch
    unlabelled = [point("m", NOW_NS + i, float(i)) for i in range(3)]
    assert encode_point_batch("t", [framed(p) for p in unlabelled], [1, 2, 3], 9) == (
        common_pb2.PointBatch(
            tenant_id="t", points=unlabelled, series_ids=[1, 2, 3], accepted_at_ns=9
        ).SerializeToString()
    )
    assert encode_point_batch("é", [], [], 0) == common_pb2.PointBatch(tenant_id="é").SerializeToString()

    cfg = KafkaConfig.from_env(__import__("tsmesh_common.config", fromlist=["Env"]).Env({}))
    records = PointProducer(cfg, producer=object()).records("t", raws, ids)
    decoded = [(partition, common_pb2.PointBatch.FromString(value)) for partition, value in records]
    assert sorted(sid for _, b in decoded for sid in b.series_ids) == sorted(ids)
    assert all(sid % cfg.partitions == partition for partition, b in decoded for sid in b.series_ids)
    assert all(b.tenant_id == "t" and b.accepted_at_ns > 0 for _, b in decoded)


def test_validation_cache_keys_on_the_identity_encoding_only() -> None:
    validator = _validator()
    same = [point("m", NOW_NS + i, v, a="1", b="2") for i, v in enumerate([1.0, 0.0, -0.0, 3.5])]
    reordered = common_pb2.Point(metric="m", labels={"b": "2", "a": "1"}, timestamp_ns=NOW_NS, value=9.0)
    other = [point("m", NOW_NS, 1.0, a="1", b="3"), point("n", NOW_NS, 1.0, a="1", b="2"), point("m", NOW_NS, 1.0)]
    request = ingest_pb2.WriteRequest(points=[*same, reordered, *other])
    request.DiscardUnknownFields()
    result = validator.validate("t", request.points)
    expected = [series_id("t", p.metric, p.labels.items()) for p in request.points]
    assert result.series_ids == expected
    assert len(set(expected)) == 4
    assert result.framed == [varint(p.ByteSize()) + p.SerializeToString() for p in request.points]
    # A second tenant with the same points gets its own ids (the cache is per tenant).
    assert validator.validate("u", request.points).series_ids == [
        series_id("u", p.metric, p.labels.items()) for p in request.points
    ]
    # Cached: validating again computes no new ids.
    misses = validator._cache.misses
    assert validator.validate("t", request.points).series_ids == expected
    assert validator._cache.misses == misses


def test_producer_record_batches_use_fast_lz4_frames_that_decode_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiokafka.codec import lz4_decode, lz4_encode
    from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

    from tsmesh_ingest.producer import use_fast_lz4

    use_fast_lz4()
    value = b"".join(point("m", NOW_NS + i, float(i), host=f"h{i % 7}").SerializeToString() for i in range(500))

    def build() -> bytes:
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=DefaultRecordBatch.CODEC_LZ4, is_transactional=False,
            producer_id=-1, producer_epoch=-1, base_sequence=-1, batch_size=1 << 20,
        )  # fmt: skip
        builder.append(0, timestamp=0, key=None, value=value, headers=[])
        return bytes(builder.build())

    built = build()
    batch = DefaultRecordBatch(built)
    assert batch.compression_type == DefaultRecordBatch.CODEC_LZ4
    assert [record.value for record in batch] == [value]
    # The builder's encoder writes level-1 (fast) frames, not aiokafka's level 9 (LZ4HC).
    encode = importlib.import_module(DefaultRecordBatchBuilder.__module__).lz4_encode
    assert encode(value) == lz4_encode(value, level=1) != lz4_encode(value, level=9)
    assert lz4_decode(encode(value)) == value
    # ... and the builder really calls it (the C builder, or the Python one): with aiokafka's level 9
    # put back, the same batch comes out smaller.
    module = importlib.import_module(DefaultRecordBatchBuilder.__module__)
    monkeypatch.setattr(module, "lz4_encode", lambda payload: lz4_encode(payload, level=9))
    assert len(build()) < len(built)
