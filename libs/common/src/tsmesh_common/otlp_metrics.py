"""OTLP metrics (``ExportMetricsServiceRequest``) translated into tsmesh points, as Prometheus's
OTLP receiver does it (ADR 0221):

- gauges and non-monotonic sums become gauges; cumulative monotonic sums become ``_total`` counters;
- explicit-bucket histograms become ``_bucket{le}`` (cumulative, with ``+Inf``), ``_sum``, ``_count``;
  summaries become ``{quantile}`` series plus ``_sum`` and ``_count``;
- delta temporality and exponential histograms are refused per metric (counted as rejected points,
  the OTLP partial success); a metric with no data type refuses the whole request;
- ``service.namespace``/``service.name`` become ``job``, ``service.instance.id`` ``instance``, and
  the other resource attributes become the labels of one ``target_info`` gauge (value 1) per resource;
- points flagged ``NO_RECORDED_VALUE`` (OTLP's staleness marker) are dropped, as remote_write's stale
  markers are (ADR 0220).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tsmesh_common import otlp_view
from tsmesh_common.errors import InvalidArgument
from tsmesh_common.otlp_names import float_text, label_name, metric_name
from tsmesh_common.pointwire import IdentityCache, Outcome, RequestWriter, identity

_CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
_DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
_NO_VALUE = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
_PROMOTED = frozenset({"service.name", "service.namespace", "service.instance.id"})

Labels = dict[str, str]


def attribute_text(value: AnyValue) -> str:
    """An attribute value as label text (arrays and maps as their JSON-like text)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return float_text(value.double_value)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "array_value":
        return "[" + ",".join(attribute_text(v) for v in value.array_value.values) + "]"
    if kind == "kvlist_value":
        return "{" + ",".join(f"{kv.key}:{attribute_text(kv.value)}" for kv in value.kvlist_value.values) + "}"
    return ""


def attribute_labels(attributes: Iterable[KeyValue]) -> Labels:
    """Attributes as labels; keys that sanitize to one name have their values joined by ``;``."""
    labels: Labels = {}
    for kv in attributes:
        name = label_name(kv.key)
        value = kv.value
        text = value.string_value if value.WhichOneof("value") == "string_value" else attribute_text(value)
        labels[name] = f"{labels[name]};{text}" if name in labels else text
    return labels


def resource_labels(attributes: Iterable[KeyValue]) -> tuple[Labels, Labels]:
    """(``job``/``instance`` labels of every series of a resource, the ``target_info`` labels)."""
    values = {kv.key: attribute_text(kv.value) for kv in attributes}
    promoted: Labels = {}
    name = values.get("service.name")
    if name:
        namespace = values.get("service.namespace")
        promoted["job"] = f"{namespace}/{name}" if namespace else name
    if values.get("service.instance.id"):
        promoted["instance"] = values["service.instance.id"]
    info = attribute_labels(kv for kv in attributes if kv.key not in _PROMOTED)
    return promoted, info


class _Series:
    """The series of one resource: identity bytes by (metric, point attributes as wire bytes, extra
    label), kept in a cache across requests when one is given (agents export the same series every
    interval); the attributes are decoded only for a series not in it."""

    def __init__(self, writer: RequestWriter, promoted: Labels, cache: IdentityCache) -> None:
        self.writer = writer
        self._promoted = promoted
        self._promoted_key = tuple(sorted(promoted.items()))
        self._cache = cache
        self.latest_ns = 0

    def identity(self, metric: str, attributes: tuple[bytes, ...], extra: tuple[str, str] | None = None) -> bytes:
        """The identity bytes of ``metric`` with the labels of ``attributes``, ``extra`` and the resource."""
        key = (self._promoted_key, metric, attributes, extra)
        found = self._cache.get(key)
        if found is None:
            labels = attribute_labels(otlp_view.attributes(attributes))
            if extra is not None:
                labels[extra[0]] = extra[1]
            labels.update(self._promoted)
            found = identity(metric, sorted(labels.items()))
            self._cache.put(key, found)
        return found

    def add(self, metric: str, attributes: tuple[bytes, ...], timestamp_ns: int, value: float) -> None:
        """One point (the per-point loops of :func:`_numbers` do this inline)."""
        self.writer.add(self.identity(metric, attributes), timestamp_ns, value)
        if timestamp_ns > self.latest_ns:
            self.latest_ns = timestamp_ns


def translate(request: Any, writer: RequestWriter, cache: IdentityCache | None = None) -> Outcome:
    """Add the points of ``request`` (an :mod:`~tsmesh_common.otlp_view` request) to ``writer``;
    what was refused comes back. ``cache`` keeps series identities across requests."""
    outcome = Outcome()
    cache = cache if cache is not None else IdentityCache()
    for resource_metrics in request.resource_metrics:
        promoted, info = resource_labels(resource_metrics.resource.attributes)
        series = _Series(writer, promoted, cache)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                _metric(metric, series, outcome)
        if info and series.latest_ns:
            writer.add(identity("target_info", sorted({**info, **promoted}.items())), series.latest_ns, 1.0)
    return outcome


def _metric(metric: Any, series: _Series, outcome: Outcome) -> None:
    kind = metric.WhichOneof("data")
    if kind == "gauge":
        _numbers(metric_name(metric.name, metric.unit, gauge=True), metric.gauge.data_points, series, outcome)
    elif kind == "sum":
        data = metric.sum
        if data.aggregation_temporality != _CUMULATIVE:
            outcome.refuse(len(data.data_points), _delta_message(metric.name))
        elif data.is_monotonic:
            _numbers(metric_name(metric.name, metric.unit, counter=True), data.data_points, series, outcome)
        else:
            _numbers(metric_name(metric.name, metric.unit, gauge=True), data.data_points, series, outcome)
    elif kind == "histogram":
        if metric.histogram.aggregation_temporality != _CUMULATIVE:
            outcome.refuse(len(metric.histogram.data_points), _delta_message(metric.name))
        else:
            _histograms(metric_name(metric.name, metric.unit), metric.histogram.data_points, series, outcome)
    elif kind == "summary":
        _summaries(metric_name(metric.name, metric.unit), metric.summary.data_points, series, outcome)
    elif kind == "exponential_histogram":
        outcome.refuse(
            len(metric.exponential_histogram.data_points),
            f"metric {metric.name!r}: exponential histograms are not supported (use explicit buckets)",
        )
    else:
        raise InvalidArgument("metrics", f"metric {metric.name[:200]!r} has no known data type (unknown metric type)")


def _delta_message(name: str) -> str:
    return (
        f"metric {name!r}: delta temporality is not accepted; configure the exporter for cumulative "
        "temporality (OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE=cumulative)"
    )


def _numbers(name: str, points: Iterable[Any], series: _Series, outcome: Outcome) -> None:
    """The hot loop: per point, a look-up by its attribute bytes and one append. ``as_int`` is read
    before ``as_double`` instead of asking the oneof which is set: the one not set reads 0."""
    known: dict[tuple[bytes, ...], bytes] = {}
    add = series.writer.add
    latest = series.latest_ns
    for point in points:
        if point.flags & _NO_VALUE:
            outcome.stale += 1
            continue
        attributes = tuple(point.attributes)
        key = known.get(attributes)
        if key is None:
            key = known[attributes] = series.identity(name, attributes)
        ts = point.time_unix_nano
        as_int = point.as_int
        add(key, ts, float(as_int) if as_int else point.as_double)
        if ts > latest:
            latest = ts
    series.latest_ns = latest


def _histograms(name: str, points: Iterable[Any], series: _Series, outcome: Outcome) -> None:
    for point in points:
        if point.flags & _NO_VALUE:
            outcome.stale += 1
            continue
        attributes = tuple(point.attributes)
        ts = point.time_unix_nano
        bounds = list(point.explicit_bounds)
        counts = list(point.bucket_counts)
        if counts and len(counts) != len(bounds) + 1:
            outcome.refuse(1, f"metric {name!r}: {len(counts)} bucket counts for {len(bounds)} bounds")
            continue
        add = series.writer.add
        bucket = f"{name}_bucket"
        cumulative = 0
        for bound, count in zip(bounds, counts, strict=False):
            cumulative += count
            add(series.identity(bucket, attributes, ("le", float_text(bound))), ts, float(cumulative))
        add(series.identity(bucket, attributes, ("le", "+Inf")), ts, float(point.count))
        if point.HasField("sum"):
            series.add(f"{name}_sum", attributes, ts, point.sum)
        series.add(f"{name}_count", attributes, ts, float(point.count))


def _summaries(name: str, points: Iterable[Any], series: _Series, outcome: Outcome) -> None:
    for point in points:
        if point.flags & _NO_VALUE:
            outcome.stale += 1
            continue
        attributes = tuple(point.attributes)
        ts = point.time_unix_nano
        for quantile in point.quantile_values:
            extra = ("quantile", float_text(quantile.quantile))
            series.writer.add(series.identity(name, attributes, extra), ts, quantile.value)
        series.add(f"{name}_sum", attributes, ts, point.sum)
        series.add(f"{name}_count", attributes, ts, float(point.count))
