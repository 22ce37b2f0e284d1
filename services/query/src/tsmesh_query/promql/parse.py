"""Stage 1: PromQL text to the engine's syntax tree, with the PyPI ``promql-parser`` (Rust).

A text the parser refuses is an INVALID_ARGUMENT on field ``query`` carrying the parser's message,
after its ``line:column`` where ``positions`` can tell it, as Prometheus words it;
native-histogram functions are refused here with a clear message instead of a wrong number.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import promql_parser as pp

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.promql import ast
from tsmesh_query.promql.positions import parse_error

MAX_QUERY_LENGTH = 16_384
NATIVE_HISTOGRAM_FUNCTIONS = frozenset(
    {"histogram_count", "histogram_sum", "histogram_fraction", "histogram_stddev", "histogram_stdvar", "histogram_avg"}
)
# Prometheus 2.x's holt_winters (renamed in 3.0), unknown to the parser's function table
pp.register_extra_functions(
    [pp.Function("holt_winters", [pp.ValueType.Matrix, pp.ValueType.Scalar, pp.ValueType.Scalar], pp.ValueType.Vector)]
)
_MATCH_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}
_CARDS = {
    "OneToOne": "one-to-one",
    "ManyToOne": "many-to-one",
    "OneToMany": "one-to-many",
    "ManyToMany": "many-to-many",
}


def parse_query(text: str) -> ast.Expr:
    """The syntax tree of ``text`` or INVALID_ARGUMENT("query", <parser message>)."""
    if not text.strip():
        raise InvalidArgument("query", "is empty")
    if len(text) > MAX_QUERY_LENGTH:
        raise InvalidArgument("query", f"longer than {MAX_QUERY_LENGTH} characters")
    try:
        tree = pp.parse(text)
    except ValueError as exc:
        raise InvalidArgument("query", parse_error(text, str(exc))) from None
    except BaseException as exc:  # the Rust extension panics (PanicException) on e.g. a negative @
        if isinstance(exc, KeyboardInterrupt | SystemExit | GeneratorExit):
            raise
        raise InvalidArgument("query", parse_error(text, str(exc))) from None
    return _convert(tree)


def _ms(delta: dt.timedelta | None) -> int:
    if delta is None:
        return 0
    return (delta.days * 86_400_000) + (delta.seconds * 1000) + (delta.microseconds // 1000)


def _at(node: Any) -> ast.At | None:
    if node is None:
        return None
    kind = str(node.type).rsplit(".", 1)[-1]
    if kind == "Start":
        return ast.At("start")
    if kind == "End":
        return ast.At("end")
    when: dt.datetime = node.at
    return ast.At("at", round(when.timestamp() * 1000))


def _selector(node: Any) -> ast.VectorSelector:
    matchers: list[ast.MatcherTuple] = []
    if node.name:
        matchers.append(("__name__", "=", node.name))
    if node.matchers.or_matchers:
        raise InvalidArgument("query", "'or' inside a selector's braces is not supported")
    for m in node.matchers.matchers:
        matchers.append((m.name, _MATCH_OPS[str(m.op).rsplit(".", 1)[-1]], m.value))
    return ast.VectorSelector(tuple(matchers), _ms(node.offset), _at(node.at))


def _convert(node: Any) -> ast.Expr:
    if isinstance(node, pp.ParenExpr):
        return _convert(node.expr)
    if isinstance(node, pp.NumberLiteral):
        return ast.Number(float(node.val))
    if isinstance(node, pp.StringLiteral):
        return ast.String(str(node.val))
    if isinstance(node, pp.VectorSelector):
        return _selector(node)
    if isinstance(node, pp.MatrixSelector):
        return ast.MatrixSelector(_selector(node.vector_selector), _ms(node.range))
    if isinstance(node, pp.SubqueryExpr):
        return ast.Subquery(_convert(node.expr), _ms(node.range), _ms(node.step), _ms(node.offset), _at(node.at))
    if isinstance(node, pp.UnaryExpr):
        return ast.Unary("-", _convert(node.expr))
    if isinstance(node, pp.BinaryExpr):
        return _binary(node)
    if isinstance(node, pp.AggregateExpr):
        modifier = node.modifier
        param = None if node.param is None else _convert(node.param)
        without = modifier is not None and str(modifier.type).endswith("Without")
        labels = tuple(modifier.labels) if modifier is not None else ()
        return ast.Aggregate(str(node.op), _convert(node.expr), param, without, labels, modifier is not None)
    if isinstance(node, pp.Call):
        name = str(node.func.name)
        if name in NATIVE_HISTOGRAM_FUNCTIONS:
            raise InvalidArgument("query", f"{name}: native histograms are not supported")
        return ast.Call(name, tuple(_convert(a) for a in node.args))
    raise InvalidArgument("query", f"unsupported expression {type(node).__name__}")


def _binary(node: Any) -> ast.Binary:
    op = str(node.op)
    modifier = node.modifier
    card = "many-to-many" if op in ("and", "or", "unless") else "one-to-one"
    on, labels, include, return_bool = False, (), (), False
    if modifier is not None:
        return_bool = bool(modifier.return_bool)
        card = _CARDS[str(modifier.card).rsplit(".", 1)[-1]]
        if op in ("and", "or", "unless"):
            card = "many-to-many"
        if modifier.matching is not None:
            on = str(modifier.matching.type).endswith("Include")
            labels = tuple(modifier.matching.labels)
        include = tuple(modifier.group_labels or ())
    return ast.Binary(op, _convert(node.lhs), _convert(node.rhs), return_bool, ast.Matching(card, on, labels, include))
