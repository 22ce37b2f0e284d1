"""The engine's own typed, hashable PromQL syntax tree (``parse`` builds it from the parser's)."""

from __future__ import annotations

from dataclasses import dataclass

MatcherTuple = tuple[str, str, str]  # (label, op in {"=", "!=", "=~", "!~"}, value)


@dataclass(frozen=True, slots=True)
class Number:
    value: float


@dataclass(frozen=True, slots=True)
class String:
    value: str


@dataclass(frozen=True, slots=True)
class At:
    """``@ <time>`` (``ms``) or ``@ start()`` / ``@ end()`` (``ms`` is None, ``kind`` names it)."""

    kind: str  # "at", "start", "end"
    ms: int = 0


@dataclass(frozen=True, slots=True)
class VectorSelector:
    matchers: tuple[MatcherTuple, ...]  # includes ("__name__", "=", metric) when a name is given
    offset_ms: int = 0
    at: At | None = None


@dataclass(frozen=True, slots=True)
class MatrixSelector:
    selector: VectorSelector
    range_ms: int


@dataclass(frozen=True, slots=True)
class Subquery:
    expr: Expr
    range_ms: int
    step_ms: int  # 0: the default evaluation interval
    offset_ms: int = 0
    at: At | None = None


@dataclass(frozen=True, slots=True)
class Unary:
    op: str
    expr: Expr


@dataclass(frozen=True, slots=True)
class Matching:
    """Vector matching of a binary operator."""

    card: str  # "one-to-one", "many-to-one" (group_left), "one-to-many" (group_right), "many-to-many"
    on: bool
    labels: tuple[str, ...]
    include: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    lhs: Expr
    rhs: Expr
    return_bool: bool
    matching: Matching


@dataclass(frozen=True, slots=True)
class Aggregate:
    op: str
    expr: Expr
    param: Expr | None
    without: bool
    labels: tuple[str, ...]
    grouped: bool  # by/without given


@dataclass(frozen=True, slots=True)
class Call:
    func: str
    args: tuple[Expr, ...]


Expr = Number | String | VectorSelector | MatrixSelector | Subquery | Unary | Binary | Aggregate | Call
