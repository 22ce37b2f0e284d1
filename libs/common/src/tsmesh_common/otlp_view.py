"""OTLP's ``ExportMetricsServiceRequest`` read with each data point's attributes left as their wire
bytes (ADR 0221).

Reading a point's attributes through the generated classes builds a ``KeyValue`` and an
``AnyValue`` object per attribute per point, most of the translation's time. This view is the same
schema (built at import from ``opentelemetry-proto``'s own descriptors, so it follows the pinned
version) in a private descriptor pool, except that ``attributes`` of the data point messages is
``repeated bytes``: a length-delimited field reads the same either way, so any OTLP body parses
into it, and a point's attributes become a tuple of bytes that keys a cache of series identities.
Only a series seen for the first time has its attributes decoded (:func:`attributes`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

_SOURCE = ".opentelemetry.proto.metrics.v1."
_PACKAGE = "tsmesh.otlpview.v1"
_POINTS = frozenset({"NumberDataPoint", "HistogramDataPoint", "SummaryDataPoint", "ExponentialHistogramDataPoint"})


def _view_file() -> descriptor_pb2.FileDescriptorProto:
    """metrics.proto renamed into :data:`_PACKAGE`, data point attributes as bytes, plus the request."""
    file = descriptor_pb2.FileDescriptorProto()
    metrics_pb2.DESCRIPTOR.CopyToProto(file)
    file.name = "tsmesh/otlpview/v1/metrics_view.proto"
    file.package = _PACKAGE
    for message in file.message_type:
        for entry in message.field:
            if entry.type_name.startswith(_SOURCE):
                entry.type_name = f".{_PACKAGE}.{entry.type_name[len(_SOURCE) :]}"
            if message.name in _POINTS and entry.name == "attributes":
                entry.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
                entry.ClearField("type_name")
    request = file.message_type.add(name="ExportMetricsServiceRequest")
    request.field.add(
        name="resource_metrics",
        number=1,
        label=descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED,
        type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
        type_name=f".{_PACKAGE}.ResourceMetrics",
    )
    return file


def _request_class() -> type[Message]:
    pool = descriptor_pool.DescriptorPool()
    for dependency in metrics_pb2.DESCRIPTOR.dependencies:
        file = descriptor_pb2.FileDescriptorProto()
        dependency.CopyToProto(file)
        pool.Add(file)
    pool.Add(_view_file())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.ExportMetricsServiceRequest"))


ExportRequestView: Any = _request_class()


def parse(body: bytes) -> Any:
    """An ``ExportMetricsServiceRequest`` body as the view (``DecodeError`` when it is not one)."""
    return ExportRequestView.FromString(body)


def view_of(request: Message) -> Any:
    """The view of a generated ``ExportMetricsServiceRequest`` (as parsed from OTLP JSON)."""
    return parse(request.SerializeToString())


def attributes(raw: Iterable[bytes]) -> list[KeyValue]:
    """A point's attributes (the view's bytes) as ``KeyValue`` messages."""
    return [KeyValue.FromString(entry) for entry in raw]
