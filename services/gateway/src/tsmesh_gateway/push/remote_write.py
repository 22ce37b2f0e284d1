"""Prometheus remote_write 1.0 (``prometheus.WriteRequest``) and 2.0 (``io.prometheus.write.v2.Request``)
bodies into tsmesh points (ADR 0220).

The version comes from the Content-Type (``application/x-protobuf`` with an optional ``proto=``
parameter; none means 1.0); the body is snappy block format, its declared length checked against the
cap before anything is inflated. ``__name__`` becomes the metric, the other labels stay labels
(empty values are absent labels, as in Prometheus); millisecond timestamps become nanoseconds.
Stale markers (the NaN with bits ``0x7ff0000000000002``) are dropped and counted; native histogram
samples are refused (tsmesh stores float samples only).
"""

from __future__ import annotations

import struct
from enum import Enum

import cramjam
from google.protobuf.message import DecodeError
from prometheus import remote_pb2, types_pb2
from prometheus.write.v2 import types_pb2 as v2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.pointwire import IdentityCache, Outcome, RequestWriter, identity
from tsmesh_gateway.http_errors import HttpError

STALE_NAN_BITS = 0x7FF0000000000002
_BITS = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
V1_PROTO = "prometheus.WriteRequest"
V2_PROTO = "io.prometheus.write.v2.Request"
PROTOBUF = "application/x-protobuf"


class Version(Enum):
    """The remote_write message a body holds."""

    V1 = V1_PROTO
    V2 = V2_PROTO


def negotiate(content_type: str | None) -> Version:
    """The version of a body from its Content-Type; 415 for anything else."""
    if not content_type:
        return Version.V1
    media, *params = (part.strip() for part in content_type.split(";"))
    if media.lower() != PROTOBUF:
        raise HttpError(
            415, "INVALID_ARGUMENT", f"Content-Type must be {PROTOBUF}, got {media[:100]!r}", {"field": "content-type"}
        )
    for param in params:
        key, _, value = param.partition("=")
        if key.strip().lower() == "proto":
            proto = value.strip().strip('"')
            for version in Version:
                if proto == version.value:
                    return version
            raise HttpError(
                415,
                "INVALID_ARGUMENT",
                f"remote write message {proto[:100]!r} is not accepted (accepted: {V1_PROTO}, {V2_PROTO})",
                {"field": "content-type"},
            )
    return Version.V1


def inflate(body: bytes, max_bytes: int) -> bytes:
    """A snappy block-format body, refusing (413) one that declares more than ``max_bytes``."""
    declared = _declared_length(body)
    if declared > max_bytes:
        raise HttpError(413, "INVALID_ARGUMENT", f"decompressed body larger than {max_bytes} bytes", {"field": "body"})
    try:
        return bytes(cramjam.snappy.decompress_raw(body))
    except cramjam.DecompressionError:
        raise HttpError(400, "INVALID_ARGUMENT", "body is not valid snappy (block format)", {"field": "body"}) from None


def _declared_length(body: bytes) -> int:
    """The uncompressed length a snappy block declares in its varint preamble."""
    value = 0
    for shift, byte in zip(range(0, 35, 7), body, strict=False):
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value
    raise HttpError(400, "INVALID_ARGUMENT", "body is not valid snappy (block format)", {"field": "body"})


def is_stale(value: float) -> bool:
    """Whether ``value`` is Prometheus's staleness marker (a NaN with a particular payload)."""
    return value != value and _BITS.unpack(_DOUBLE.pack(value))[0] == STALE_NAN_BITS


def translate(version: Version, data: bytes, writer: RequestWriter, cache: IdentityCache | None = None) -> Outcome:
    """Add the samples of an uncompressed remote_write body to ``writer``; ``cache`` keeps series
    identities across bodies."""
    cache = cache or IdentityCache()
    if version is Version.V2:
        return _translate_v2(data, writer, cache)
    try:
        request = remote_pb2.WriteRequest.FromString(data)
    except DecodeError:
        raise InvalidArgument("body", f"not a valid {V1_PROTO} (truncated or corrupt protobuf)") from None
    outcome = Outcome()
    for series in request.timeseries:
        _series(tuple([(label.name, label.value) for label in series.labels]), series, outcome, writer, cache)
    return outcome


def _translate_v2(data: bytes, writer: RequestWriter, cache: IdentityCache) -> Outcome:
    try:
        request = v2.Request.FromString(data)
    except DecodeError:
        raise InvalidArgument("body", f"not a valid {V2_PROTO} (truncated or corrupt protobuf)") from None
    symbols = request.symbols
    outcome = Outcome()
    for series in request.timeseries:
        refs = series.labels_refs
        if len(refs) % 2:
            raise InvalidArgument("timeseries", "labels_refs must hold pairs of symbol references")
        try:
            pairs = tuple([(symbols[refs[i]], symbols[refs[i + 1]]) for i in range(0, len(refs), 2)])
        except IndexError:
            raise InvalidArgument("timeseries", f"a label reference beyond the {len(symbols)} symbols") from None
        _series(pairs, series, outcome, writer, cache)
    return outcome


def _series(
    pairs: tuple[tuple[str, str], ...],
    series: types_pb2.TimeSeries | v2.TimeSeries,
    outcome: Outcome,
    writer: RequestWriter,
    cache: IdentityCache,
) -> None:
    if series.histograms:
        outcome.refuse(len(series.histograms), "native histogram samples are not supported (float samples only)")
    if not series.samples:
        return
    key = cache.get(pairs)
    if key is None:
        metric = ""
        labels: list[tuple[str, str]] = []
        for name, value in pairs:
            if name == "__name__":
                metric = value
            elif value:
                labels.append((name, value))
        if not metric:
            outcome.refuse(len(series.samples), "a series without a __name__ label")
            return
        labels.sort()
        key = identity(metric, labels)
        cache.put(pairs, key)
    add = writer.add
    for sample in series.samples:
        number = sample.value
        if number != number and is_stale(number):
            outcome.stale += 1
            continue
        add(key, sample.timestamp * 1_000_000, number)
