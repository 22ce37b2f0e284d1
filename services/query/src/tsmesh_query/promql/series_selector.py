"""A PromQL series selector as the structured selector of live subscriptions (``ParseSelector``).

WebSocket clients may subscribe with ``cpu{host=~"web.*"}`` instead of a JSON or protobuf selector.
The text is parsed by the PromQL engine's parser and must be a plain series selector: no function,
range, offset, ``@`` or operator. Live points are routed by metric, so it needs exactly one metric
name (``cpu{...}`` or ``{__name__="cpu", ...}``); other ``__name__`` matchers are refused. The
result is checked by the same :func:`parse_selector` as a structured selector (RE2 limits, sizes),
so both forms match the same points: a label absent from a series reads as ``""``, as in Prometheus.
"""

from __future__ import annotations

from tsmesh.v1 import common_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits
from tsmesh_query.promql import ast
from tsmesh_query.promql.parse import parse_query
from tsmesh_query.promql.values import NAME
from tsmesh_query.selectors import parse_selector

FIELD = "promql"
_OPS = {
    "=": common_pb2.MATCH_OP_EQUAL,
    "!=": common_pb2.MATCH_OP_NOT_EQUAL,
    "=~": common_pb2.MATCH_OP_REGEX,
    "!~": common_pb2.MATCH_OP_NOT_REGEX,
}


def selector_from_promql(text: str, limits: QueryLimits) -> common_pb2.Selector:
    """The structured selector ``text`` denotes, or INVALID_ARGUMENT on field ``promql``."""
    try:
        expr = parse_query(text)
    except InvalidArgument as exc:
        raise InvalidArgument(FIELD, exc.message.removeprefix("query: ")) from None
    if not isinstance(expr, ast.VectorSelector) or expr.offset_ms or expr.at is not None:
        raise InvalidArgument(
            FIELD, 'must be a series selector such as cpu{host=~"web.*"} (no function, range, offset, @ or operator)'
        )
    metric = ""
    matchers: list[common_pb2.LabelMatcher] = []
    for name, op, value in expr.matchers:
        if name != NAME:
            matchers.append(common_pb2.LabelMatcher(name=name, op=_OPS[op], value=value))
        elif op == "=" and not metric and value:
            metric = value
        else:
            raise InvalidArgument(
                FIELD, f'needs exactly one metric name (cpu{{...}} or {{__name__="cpu"}}), not __name__{op}"{value}"'
            )
    if not metric:
        raise InvalidArgument(FIELD, 'needs a metric name (cpu{...} or {__name__="cpu"}): live points are routed by it')
    selector = common_pb2.Selector(metric=metric, matchers=matchers)
    parse_selector(selector, limits, FIELD)
    return selector
