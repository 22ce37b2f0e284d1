"""JSON shapes of the /v1 API to and from the protobuf messages; every refusal names its field."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from tsmesh.v1 import common_pb2, ingest_pb2, query_pb2

from tsmesh_common.errors import InvalidArgument

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_POINTS_PER_REQUEST = 10_000  # ingest refuses larger requests
MAX_MATCHERS = 32  # query refuses more

MATCH_OPS = {
    "=": common_pb2.MATCH_OP_EQUAL,
    "!=": common_pb2.MATCH_OP_NOT_EQUAL,
    "=~": common_pb2.MATCH_OP_REGEX,
    "!~": common_pb2.MATCH_OP_NOT_REGEX,
}
# "avg" -> AGGREGATION_AVG, "none" -> FILL_NONE, ...: derived from the enums, never re-listed
AGGREGATIONS = {
    v.name.removeprefix("AGGREGATION_").lower(): v.number for v in query_pb2.Aggregation.DESCRIPTOR.values if v.number
}
FILLS = {v.name.removeprefix("FILL_").lower(): v.number for v in query_pb2.Fill.DESCRIPTOR.values if v.number}
# What PostgreSQL cannot hold in a label (jsonb) or metric (text): ingest refuses it too (ADR 0210).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
RESOLUTIONS = {
    query_pb2.RESOLUTION_RAW: "raw",
    query_pb2.RESOLUTION_1M: "1m",
    query_pb2.RESOLUTION_1H: "1h",
}


def _str(obj: dict[str, Any], key: str, field: str, *, required: bool = True, max_len: int = 1024) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise InvalidArgument(field, "must be a non-empty string" if required else "must be a string")
    if len(value) > max_len:
        raise InvalidArgument(field, f"longer than {max_len} characters")
    return value


def _int(obj: dict[str, Any], key: str, field: str, *, required: bool = True, default: int = 0) -> int:
    if key not in obj and not required:
        return default
    value = obj.get(key)
    if isinstance(value, float) and value.is_integer() and abs(value) <= 2**53:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(field, "must be an integer")
    if not INT64_MIN <= value <= INT64_MAX:
        raise InvalidArgument(field, "out of the int64 range")
    return value


def _enum(obj: dict[str, Any], key: str, field: str, table: Mapping[str, Any], default: Any) -> Any:
    if key not in obj:
        return default
    value = obj[key]
    if not isinstance(value, str) or value.lower() not in table:
        raise InvalidArgument(field, f"must be one of {', '.join(table)}")
    return table[value.lower()]


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidArgument(field, "must be an object")
    return value


def storable(text: str, field: str) -> str:
    """``text``, refused when it holds what the store cannot: NUL (U+0000) or a lone surrogate."""
    if "\x00" in text or (not text.isascii() and _UNSTORABLE.search(text) is not None):
        raise InvalidArgument(field, "must not contain NUL (U+0000) or lone surrogates")
    return text


def labels_from_json(value: Any, field: str) -> dict[str, str]:
    if value is None:
        return {}
    labels = _object(value, field)
    for name, label_value in labels.items():
        if not isinstance(label_value, str):
            raise InvalidArgument(f"{field}.{name}", "must be a string")
        storable(name, f"{field}.{name.encode('utf-8', 'backslashreplace').decode()[:64]}")
        storable(label_value, f"{field}.{name}")
    return labels


def selector_from_json(value: Any, field: str = "selector") -> common_pb2.Selector:
    """``{"metric": "cpu", "matchers": [{"name": "host", "op": "=", "value": "a"}]}``."""
    obj = _object(value, field)
    metric = obj.get("metric")
    selector = common_pb2.Selector(
        metric=_str(obj, "metric", f"{field}.metric", max_len=256) if metric is not None else ""
    )
    matchers = obj.get("matchers", [])
    if matchers is None:
        matchers = []
    if not isinstance(matchers, list):
        raise InvalidArgument(f"{field}.matchers", "must be an array")
    if len(matchers) > MAX_MATCHERS:
        raise InvalidArgument(f"{field}.matchers", f"at most {MAX_MATCHERS} matchers")
    for i, item in enumerate(matchers):
        where = f"{field}.matchers[{i}]"
        matcher = _object(item, where)
        op = matcher.get("op", "=")
        if not isinstance(op, str) or op not in MATCH_OPS:
            raise InvalidArgument(f"{where}.op", "must be one of =, !=, =~, !~")
        selector.matchers.add(
            name=_str(matcher, "name", f"{where}.name"),
            op=MATCH_OPS[op],
            value=_str(matcher, "value", f"{where}.value", required=False),
        )
    if not selector.metric and not selector.matchers:
        raise InvalidArgument(field, "needs a metric or at least one matcher")
    return selector


def selector_to_json(selector: common_pb2.Selector) -> dict[str, Any]:
    ops = {v: k for k, v in MATCH_OPS.items()}
    return {
        "metric": selector.metric,
        "matchers": [{"name": m.name, "op": ops.get(m.op, "="), "value": m.value} for m in selector.matchers],
    }


def write_from_json(value: Any, max_points: int = MAX_POINTS_PER_REQUEST) -> ingest_pb2.WriteRequest:
    """``{"points": [{"metric", "labels", "timestamp_ns", "value"}, ...]}``, at most ``max_points``."""
    obj = _object(value, "body")
    points = obj.get("points")
    if not isinstance(points, list) or not points:
        raise InvalidArgument("points", "must be a non-empty array")
    if len(points) > max_points:
        raise InvalidArgument("points", f"at most {max_points} points per request")
    request = ingest_pb2.WriteRequest()
    for i, item in enumerate(points):
        where = f"points[{i}]"
        point = _object(item, where)
        number = point.get("value")
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise InvalidArgument(f"{where}.value", "must be a number")
        try:
            as_float = float(number)
        except OverflowError:
            raise InvalidArgument(f"{where}.value", "out of the float64 range") from None
        request.points.add(
            metric=storable(_str(point, "metric", f"{where}.metric", max_len=256), f"{where}.metric"),
            labels=labels_from_json(point.get("labels"), f"{where}.labels"),
            timestamp_ns=_int(point, "timestamp_ns", f"{where}.timestamp_ns"),
            value=as_float,
        )
    return request


def write_to_json(response: ingest_pb2.WriteResponse) -> dict[str, Any]:
    return {
        "accepted": response.accepted,
        "rejected": response.rejected,
        "errors": [{"index": e.index, "field": e.field, "reason": e.reason} for e in response.errors],
    }


def range_from_json(value: Any) -> query_pb2.QueryRangeRequest:
    obj = _object(value, "body")
    group_by = obj.get("group_by") if "group_by" in obj else []
    if not isinstance(group_by, list) or not all(isinstance(g, str) for g in group_by):
        raise InvalidArgument("group_by", "must be an array of label names")
    return query_pb2.QueryRangeRequest(
        selector=selector_from_json(obj.get("selector")),
        start_ns=_int(obj, "start_ns", "start_ns"),
        end_ns=_int(obj, "end_ns", "end_ns"),
        step_ns=_int(obj, "step_ns", "step_ns", required=False),
        aggregation=_enum(obj, "aggregation", "aggregation", AGGREGATIONS, query_pb2.AGGREGATION_AVG),
        group_by=group_by,
        fill=_enum(obj, "fill", "fill", FILLS, query_pb2.FILL_NONE),
    )


RANGE_QUERY_PARAMETERS = ("metric", "match", "start_ns", "end_ns", "step_ns", "aggregation", "fill", "group_by")
_MATCH = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(=~|!~|!=|=)(.*)", re.DOTALL)
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_MATCHER_FIELD = re.compile(r"selector\.matchers\[([0-9]+)\]")
_QUERY_PARAMETER_OF = {"selector": "metric", "selector.metric": "metric", "selector.matchers": "match"}


def range_from_query(raw: bytes) -> query_pb2.QueryRangeRequest:
    """``GET /v1/query/range`` (as Prometheus' ``/api/v1/query_range``): ``metric`` (required), ``match``
    (repeated, ``name<op>value`` with ``=``, ``!=``, ``=~``, ``!~``), ``start_ns``, ``end_ns``,
    ``step_ns``, ``aggregation``, ``fill``, ``group_by`` (repeated); the same checks as the JSON body."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidArgument("query", "must be percent-encoded ASCII") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, errors="strict", max_num_fields=256)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("query", "malformed query string (percent-encoded UTF-8, at most 256 fields)") from None
    obj: dict[str, Any] = {}
    selector: dict[str, Any] = {"matchers": []}
    group_by: list[str] = []
    for name, value in pairs:
        if name not in RANGE_QUERY_PARAMETERS:
            raise InvalidArgument(name or "query", f"unknown parameter (expected {', '.join(RANGE_QUERY_PARAMETERS)})")
        if name == "match":
            found = _MATCH.fullmatch(value)
            if found is None:
                raise InvalidArgument("match", "must look like name=value, name!=value, name=~regex or name!~regex")
            selector["matchers"].append({"name": found[1], "op": found[2], "value": found[3]})
        elif name == "group_by":
            group_by.append(value)
        elif name in obj or (name == "metric" and "metric" in selector):
            raise InvalidArgument(name, "given more than once")
        elif name == "metric":
            selector["metric"] = value
        else:
            obj[name] = int(value) if name.endswith("_ns") and _INTEGER.fullmatch(value) else value
    if "metric" not in selector:
        raise InvalidArgument("metric", "is required (a selector of matchers only needs the POST form)")
    obj["selector"] = selector
    if group_by:
        obj["group_by"] = group_by
    try:
        return range_from_json(obj)
    except InvalidArgument as exc:  # name the query parameter, not the JSON body's field
        field, reason = exc.field, str(exc).removeprefix(f"{exc.field}: ")
        found = _MATCHER_FIELD.match(field)
        if found is not None:
            raise InvalidArgument("match", f"{reason} (match number {int(found[1]) + 1})") from None
        raise InvalidArgument(_QUERY_PARAMETER_OF.get(field, field), reason) from None


def range_to_json(response: query_pb2.QueryRangeResponse) -> dict[str, Any]:
    return {
        "resolution": RESOLUTIONS.get(response.resolution, "raw"),
        "series": [
            {
                "metric": s.metric,
                "labels": dict(s.labels),
                "buckets": [
                    {"start_ns": b.start_ns, "value": b.value if b.HasField("value") else None, "count": b.count}
                    for b in s.buckets
                ],
            }
            for s in response.series
        ],
    }


def point_to_json(point: common_pb2.Point) -> dict[str, Any]:
    return {
        "metric": point.metric,
        "labels": dict(point.labels),
        "timestamp_ns": point.timestamp_ns,
        "value": point.value,
    }


def limit_from_json(obj: dict[str, Any]) -> int:
    limit = _int(obj, "limit", "limit", required=False, default=0)
    if not 0 <= limit <= 100_000:
        raise InvalidArgument("limit", "must be between 0 and 100000")
    return limit
