"""The API's wire-bytes path (validation on the serialized request, records from framed points) gives
exactly what the per-point message path gives: same ids, same point bytes, same errors in the same
order, same records; whatever the points' shapes, unknown fields or crafted tails."""

from __future__ import annotations

import math
import random
import struct

import pytest
from ingest_harness import point
from tsmesh.v1 import common_pb2, ingest_pb2

from tsmesh_common.config import Env
from tsmesh_common.errors import InvalidArgument
from tsmesh_common.protowire import varint
from tsmesh_ingest.config import KafkaConfig
from tsmesh_ingest.limits import ValidationLimits
from tsmesh_ingest.producer import PointProducer
from tsmesh_ingest.series_id import SeriesIdCache, series_id
from tsmesh_ingest.validation import Validated, Validator

NOW = 1_700_000_000.0
NOW_NS = int(NOW * 1e9)
Expected = tuple[list[int], list[common_pb2.Point], list[tuple[int, str, str]], list[str]]


def _oracle(validator: Validator, limits: ValidationLimits, tenant: str, wire: bytes, base: int = 0) -> Expected:
    """The per-point message path, written plainly: the reference the fast path must equal."""
    request = ingest_pb2.WriteRequest.FromString(wire)
    request.DiscardUnknownFields()
    now_ns = int(NOW * 1e9)
    lo = now_ns - limits.max_past_seconds * 10**9
    hi = now_ns + limits.max_future_seconds * 10**9
    ids: list[int] = []
    points: list[common_pb2.Point] = []
    errors: list[tuple[int, str, str]] = []
    codes: list[str] = []
    for i, p in enumerate(request.points):
        problem = None
        if p.timestamp_ns < lo or p.timestamp_ns > hi:
            reason = "too old (before the retention window)" if p.timestamp_ns < lo else "too far in the future"
            problem = ("timestamp_ns", reason, "timestamp_out_of_range")
        elif not limits.allow_non_finite and not math.isfinite(p.value):
            problem = ("value", "must be finite (NaN and infinities are refused)", "non_finite_value")
        else:
            problem = validator._check_identity(p.metric, tuple(p.labels.items()))
        if problem is not None:
            errors.append((base + i, problem[0], problem[1]))
            codes.append(problem[2])
            continue
        ids.append(series_id(tenant, p.metric, p.labels.items()))
        points.append(p)
    return ids, points, errors, codes


def _decoded(framed: list[bytes]) -> list[common_pb2.Point]:
    """Framed points decoded; each must be exactly its known fields (no unknown field forwarded).
    Compared as messages: a map's entries may come in the sender's order."""
    points = []
    for entry in framed:
        prefix = next(k for k in (1, 2, 3) if varint(len(entry) - k) == entry[:k])
        decoded = common_pb2.Point.FromString(entry[prefix:])
        assert len(entry) - prefix == decoded.ByteSize()
        points.append(decoded)
    return points


def _outcome(result: Validated) -> Expected:
    return (
        result.series_ids,
        _decoded(result.framed),
        [(e.index, e.field, e.reason) for e in result.errors],
        result.reasons,
    )


def _wire(points: list[bytes], trailer: bytes = b"") -> bytes:
    """A WriteRequest on the wire from point bytes (which may carry unknown fields), as a client sends it."""
    return b"".join(b"\x0a" + varint(len(p)) + p for p in points) + trailer


def _random_point(rng: random.Random) -> bytes:
    metric = rng.choice(["m", "cpu_usage", "bench_metric", "", "1bad", "x" * 201, "ok:metric"])
    labels = rng.choice(
        [
            {},
            {"host": f"h{rng.randrange(3)}"},
            {"b": "2", "a": "1"},
            {"1x": "bad name"},
            {f"l{i}": "v" for i in range(33)},
            {"big": "v" * rng.choice([100, 200, 1025])},
            {"u": "é" * 300},
        ]
    )
    ts = rng.choice(
        [NOW_NS, NOW_NS - 3_600 * 10**9, NOW_NS - 31 * 86_400 * 10**9, NOW_NS + 601 * 10**9, 0, 1000, -5,
         (1 << 56) - 1, 1 << 56]
    )  # fmt: skip
    value = rng.choice([1.5, 0.0, -0.0, math.nan, math.inf, -math.inf, 1e308, 5e-324, -2.5])
    raw = common_pb2.Point(metric=metric, labels=labels, timestamp_ns=ts, value=value).SerializeToString()
    if rng.random() < 0.15:  # an unknown field (varint field 9, or bytes field 15)
        raw += rng.choice([b"\x48\x01", b"\x7a\x03abc"])
    return raw


def test_wire_path_equals_the_message_path_on_random_requests() -> None:
    rng = random.Random(20261128)
    for limits in (
        ValidationLimits(),
        ValidationLimits(allow_non_finite=True, max_label_value_bytes=4096),
        ValidationLimits(max_past_seconds=60 * 365 * 86_400),  # before 1972: timestamps under 2**56 accepted
    ):
        validator = Validator(limits, SeriesIdCache(), clock=lambda: NOW)
        for round_ in range(40):
            wire = _wire([_random_point(rng) for _ in range(rng.randrange(0, 60))])
            expected = _oracle(validator, limits, "t", wire, base=round_)
            # Cold then warm: the second time most identities are cache hits.
            for _ in range(2):
                got = validator.validate_request("t", wire, base_index=round_)
                assert _outcome(got) == expected


def test_unknown_request_fields_are_dropped_not_forwarded() -> None:
    limits = ValidationLimits()
    validator = Validator(limits, SeriesIdCache(), clock=lambda: NOW)
    good = point("m", NOW_NS, 1.0, a="1").SerializeToString()
    validator.validate("t", [common_pb2.Point.FromString(good)])  # warm: the identity is cached
    wire = _wire([good, good + b"\x48\x01"], trailer=b"\x10\x07\x1a\x02zz")  # unknown fields 2 and 3
    got = validator.validate_request("t", wire)
    assert _outcome(got) == _oracle(validator, limits, "t", wire)
    assert got.framed == [varint(len(good)) + good] * 2


def test_a_crafted_tail_behind_a_cached_identity_is_not_trusted() -> None:
    # The identity (m, a=1) is cached; a point with those identity bytes but a 2-byte timestamp
    # (ts=5), a value whose last byte is 0x21 and an unknown field has the 19-byte tail shape the walk
    # looks for at first sight: it must take the message path (and be refused as too old).
    limits = ValidationLimits()
    validator = Validator(limits, SeriesIdCache(), clock=lambda: NOW)
    validator.validate("t", [point("m", NOW_NS, 1.0, a="1")])
    identity = common_pb2.Point(metric="m", labels={"a": "1"}).SerializeToString()
    value = bytes(7) + b"\x21"
    crafted = identity + b"\x18\x05" + b"\x21" + value + b"\x30" + b"\x81" * 6 + b"\x01"
    assert len(crafted) - len(identity) == 19 and crafted[-9] == 0x21
    parsed = common_pb2.Point.FromString(crafted)
    assert parsed.timestamp_ns == 5 and parsed.value == struct.unpack("<d", value)[0]
    # No timestamp at all (0), an unknown varint field 9 holding a valid-looking one in its place.
    unknown_in_place = identity + b"\x48" + varint(NOW_NS) + b"\x21" + struct.pack("<d", 1.0)
    assert len(unknown_in_place) - len(identity) == 19
    wire = _wire([crafted, unknown_in_place])
    got = validator.validate_request("t", wire)
    assert _outcome(got) == _oracle(validator, limits, "t", wire)
    assert [(e.index, e.field) for e in got.errors] == [(0, "timestamp_ns"), (1, "timestamp_ns")]
    # In range (a lenient window), the same points are accepted as what they are, without unknown fields.
    lenient = ValidationLimits(max_past_seconds=60 * 365 * 86_400)
    validator = Validator(lenient, SeriesIdCache(), clock=lambda: NOW)
    validator.validate("t", [point("m", NOW_NS, 1.0, a="1")])  # cached: the walk finds the identity
    got = validator.validate_request("t", wire)
    clean = [
        common_pb2.Point(metric="m", labels={"a": "1"}, timestamp_ns=5, value=parsed.value).SerializeToString(),
        common_pb2.Point(metric="m", labels={"a": "1"}, timestamp_ns=0, value=1.0).SerializeToString(),
    ]
    assert got.framed == [varint(len(raw)) + raw for raw in clean]
    assert got.series_ids == [series_id("t", "m", [("a", "1")])] * 2
    # A label entry after the timestamp makes another identity, whatever the cached prefix says.
    extra_label = identity + b"\x18\x05" + common_pb2.Point(labels={"z": "y"}).SerializeToString()
    extra_label += b"\x21" + struct.pack("<d", 3.0)
    assert len(extra_label) - len(identity) == 19
    got = validator.validate_request("t", _wire([extra_label]))
    assert got.series_ids == [series_id("t", "m", [("a", "1"), ("z", "y")])]


def test_points_of_every_length_prefix_size_and_without_value_are_framed_right() -> None:
    limits = ValidationLimits(max_label_value_bytes=40_000)
    validator = Validator(limits, SeriesIdCache(), clock=lambda: NOW)
    points = [
        point("m", NOW_NS, 0.0),  # value 0.0 is not written: the tail is the timestamp alone
        point("m", NOW_NS + 1, 2.0, v="x" * 100),  # 2-byte length prefix
        point("m", NOW_NS + 2, 3.0, v="x" * 20_000),  # 3-byte length prefix
        point("m", NOW_NS + 3, -0.0, v="x" * 20_000),
    ]
    wire = ingest_pb2.WriteRequest(points=points).SerializeToString()
    for _ in range(2):
        got = validator.validate_request("t", wire)
        assert _outcome(got) == _oracle(validator, limits, "t", wire)
        assert not got.errors and [p.timestamp_ns for p in got.points] == [NOW_NS + i for i in range(4)]


def test_records_of_the_wire_path_are_the_point_batches_upb_builds() -> None:
    rng = random.Random(7)
    validator = Validator(ValidationLimits(), SeriesIdCache(), clock=lambda: NOW)
    points = [point("m", NOW_NS + i, float(i), host=f"h{rng.randrange(50)}") for i in range(500)]
    request = ingest_pb2.WriteRequest(points=points)
    validator.validate_request("t", request.SerializeToString())
    result = validator.validate_request("t", request.SerializeToString())
    cfg = KafkaConfig.from_env(Env({}))
    records = PointProducer(cfg, producer=object()).records("t", result.framed, result.series_ids)
    assert [partition for partition, _ in records] == list(
        dict.fromkeys(sid % cfg.partitions for sid in result.series_ids)
    )
    for partition, value in records:
        batch = common_pb2.PointBatch.FromString(value)
        mine = [
            (p, sid)
            for p, sid in zip(request.points, result.series_ids, strict=True)
            if sid % cfg.partitions == partition
        ]
        assert list(batch.points) == [p for p, _ in mine]
        assert list(batch.series_ids) == [sid for _, sid in mine]
        assert batch.tenant_id == "t" and batch.accepted_at_ns > 0


def test_requests_that_are_not_plain_points_are_parsed_refused_or_limited_as_before() -> None:
    validator = Validator(ValidationLimits(max_points_per_request=3), SeriesIdCache(), clock=lambda: NOW)
    good = point("m", NOW_NS, 1.0).SerializeToString()
    validator.validate("t", [point("m", NOW_NS, 1.0)])
    for malformed in (_wire([good])[:-3], b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x0a\x05\xff"):
        with pytest.raises(InvalidArgument, match="not a valid WriteRequest") as refused:
            validator.validate_request("t", malformed)
        assert refused.value.field == "points"
    with pytest.raises(InvalidArgument, match="at most 3 points per request, got 4"):
        validator.validate_request("t", _wire([good] * 4))
    # Within the limit once the unknown field is dropped, a point with invalid UTF-8 refuses the request.
    assert validator.validate_request("t", _wire([good] * 3, trailer=b"\x10\x01")).accepted == 3
    bad_utf8 = common_pb2.Point(metric="m", labels={"a": "x"}).SerializeToString().replace(b"x", b"\xff")
    with pytest.raises(InvalidArgument, match=r"points\[1\]\.labels\.a: not valid UTF-8"):
        validator.validate_request("t", _wire([good, bad_utf8]))
    with pytest.raises(InvalidArgument, match=r"points\[1\]\.labels\.a: not valid UTF-8"):  # the upb-first path
        validator.validate_request("t", _wire([good, bad_utf8], trailer=b"\x10\x01"))
    empty = validator.validate_request("t", b"")
    assert (empty.accepted, empty.received, empty.errors) == (0, 0, [])


def test_identities_are_cached_in_the_label_order_clients_send() -> None:
    # Another process's upb may write map entries in another order: its bytes must become cache hits
    # too (they name the same identity), while a key with an extra or a missing entry never does.
    validator = Validator(ValidationLimits(), SeriesIdCache(), clock=lambda: NOW)
    labels = {"host": "h1", "dc": "eu", "rack": "r7"}
    head = common_pb2.Point(metric="m").SerializeToString()
    entries = [common_pb2.Point(labels={k: v}).SerializeToString() for k, v in labels.items()]
    tail = point("m", NOW_NS, 2.5).SerializeToString()[len(head) :]
    orders = [head + b"".join(entries[i] for i in order) + tail for order in ((2, 1, 0), (1, 2, 0), (0, 2, 1))]
    expected = [point("m", NOW_NS, 2.5, **labels)] * 3
    first = validator.validate_request("t", _wire(orders))
    assert first.points == expected and not first.errors
    misses = validator._cache.misses
    again = validator.validate_request("t", _wire(orders))
    assert validator._cache.misses == misses  # every order is now a cache hit
    assert again.framed == [varint(len(w)) + w for w in orders] and again.points == expected
    assert again.series_ids == [series_id("t", "m", labels.items())] * 3
    # A key missing an entry is another identity; one repeating an entry is never cached: no alias.
    for wire in (head + entries[0] + entries[1] + tail, head + entries[0] + entries[0] + entries[1] + tail):
        for _ in range(2):
            got = validator.validate_request("t", _wire([wire]))
            assert _outcome(got) == _oracle(validator, ValidationLimits(), "t", _wire([wire]))
