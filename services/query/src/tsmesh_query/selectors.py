"""Series selectors: a metric plus label matchers (``=``, ``!=``, ``=~``, ``!~``).

Regexes are anchored (the whole label value must match), size-limited and compiled with RE2, so
no pattern can backtrack catastrophically; a pattern RE2 refuses (too large a program) is an
INVALID_ARGUMENT naming the matcher. Equality matchers with a non-empty value can be pushed to SQL
(``labels @> {...}``); everything is also checked here so the answer never depends on SQL details.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import re2
from tsmesh.v1 import common_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits

MAX_NAME_LENGTH = 256
MAX_VALUE_LENGTH = 2048


@dataclass(frozen=True, slots=True)
class Matcher:
    """One compiled label matcher."""

    name: str
    op: int
    value: str
    regex: Any

    def matches(self, labels: Mapping[str, str]) -> bool:
        actual = labels.get(self.name, "")
        if self.op == common_pb2.MATCH_OP_EQUAL:
            return actual == self.value
        if self.op == common_pb2.MATCH_OP_NOT_EQUAL:
            return actual != self.value
        hit = self.regex.fullmatch(actual) is not None
        return hit if self.op == common_pb2.MATCH_OP_REGEX else not hit


@dataclass(frozen=True, slots=True)
class Selector:
    """A validated selector; ``fingerprint`` identifies it in cache keys."""

    metric: str
    matchers: tuple[Matcher, ...]
    fingerprint: str

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.matchers)

    def sql_containment(self) -> dict[str, str]:
        """Equality matchers SQL can apply through the GIN index (``labels @> ...``)."""
        return {m.name: m.value for m in self.matchers if m.op == common_pb2.MATCH_OP_EQUAL and m.value}


def _compile_regex(pattern: str, field: str, limits: QueryLimits) -> object:
    if len(pattern) > limits.max_regex_length:
        raise InvalidArgument(field, f"regex longer than max_regex_length={limits.max_regex_length}")
    options = re2.Options()
    options.max_mem = limits.regex_max_mem
    options.log_errors = False
    options.never_capture = True
    try:
        return re2.compile(f"(?:{pattern})", options)
    except re2.error as exc:
        raise InvalidArgument(field, f"invalid or too complex regex ({exc})") from None


def parse_selector(message: common_pb2.Selector, limits: QueryLimits, field: str = "selector") -> Selector:
    """Validate a protobuf selector and compile its matchers; errors name the offending field."""
    metric = message.metric
    if not metric:
        raise InvalidArgument(f"{field}.metric", "is required")
    if len(metric) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"{field}.metric", f"longer than {MAX_NAME_LENGTH} characters")
    if len(message.matchers) > limits.max_matchers:
        raise InvalidArgument(f"{field}.matchers", f"more than max_matchers={limits.max_matchers}")
    matchers: list[Matcher] = []
    digest = hashlib.blake2b(digest_size=16)
    _field(digest, metric.encode())
    for i, m in enumerate(message.matchers):
        where = f"{field}.matchers[{i}]"
        if not m.name or len(m.name) > MAX_NAME_LENGTH:
            raise InvalidArgument(f"{where}.name", f"must be 1..{MAX_NAME_LENGTH} characters")
        if len(m.value) > MAX_VALUE_LENGTH:
            raise InvalidArgument(f"{where}.value", f"longer than {MAX_VALUE_LENGTH} characters")
        regex = None
        if m.op in (common_pb2.MATCH_OP_REGEX, common_pb2.MATCH_OP_NOT_REGEX):
            regex = _compile_regex(m.value, f"{where}.value", limits)
        elif m.op not in (common_pb2.MATCH_OP_EQUAL, common_pb2.MATCH_OP_NOT_EQUAL):
            raise InvalidArgument(f"{where}.op", "must be EQUAL, NOT_EQUAL, REGEX or NOT_REGEX")
        matchers.append(Matcher(m.name, m.op, m.value, regex))
    for compiled in sorted(matchers, key=lambda x: (x.name, x.op, x.value)):
        _field(digest, compiled.name.encode())
        _field(digest, bytes([compiled.op]))
        _field(digest, compiled.value.encode())
    return Selector(metric, tuple(matchers), digest.hexdigest())


def _field(digest: Any, data: bytes) -> None:
    """Length-prefix each field so no two different selectors hash the same byte stream."""
    digest.update(len(data).to_bytes(4, "big"))
    digest.update(data)
