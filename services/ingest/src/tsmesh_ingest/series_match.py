"""A selector (``tsmesh.v1.Selector``) as SQL over ``ts.series``, always within one tenant.

Prometheus semantics: a missing label equals the empty string; regexes are anchored (PostgreSQL
``~`` on ``^(?:re)$``)."""

from __future__ import annotations

from typing import Any

from tsmesh.v1 import common_pb2

from tsmesh_common.errors import InvalidArgument

_OPS = {
    common_pb2.MATCH_OP_EQUAL: "=",
    common_pb2.MATCH_OP_NOT_EQUAL: "<>",
    common_pb2.MATCH_OP_REGEX: "~",
    common_pb2.MATCH_OP_NOT_REGEX: "!~",
}
MAX_MATCHERS = 32


def series_where(tenant_id: str, selector: common_pb2.Selector) -> tuple[str, list[Any]]:
    """``(condition on ts.series s, parameters)``; the tenant is always the first parameter."""
    if not selector.metric and not selector.matchers:
        raise InvalidArgument("selector", "needs a metric or at least one matcher")
    if len(selector.matchers) > MAX_MATCHERS:
        raise InvalidArgument("selector.matchers", f"at most {MAX_MATCHERS}")
    parts = ["s.tenant_id = $1"]
    args: list[Any] = [tenant_id]
    if selector.metric:
        args.append(selector.metric)
        parts.append(f"s.metric = ${len(args)}")
    for i, matcher in enumerate(selector.matchers):
        op = _OPS.get(matcher.op)
        if op is None or not matcher.name:
            raise InvalidArgument(f"selector.matchers[{i}]", "needs a name and an operator")
        value = matcher.value if op in ("=", "<>") else f"^(?:{matcher.value})$"
        args.extend([matcher.name, value])
        parts.append(f"coalesce(s.labels ->> ${len(args) - 1}, '') {op} ${len(args)}")
    return " AND ".join(parts), args
