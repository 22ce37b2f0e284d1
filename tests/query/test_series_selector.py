"""A PromQL series selector becomes the structured selector of a live subscription (ParseSelector):
the same parser as PromQL, the same limits and matching as a structured selector."""

from __future__ import annotations

import pytest
from tsmesh.v1 import common_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.config import QueryLimits
from tsmesh_query.promql.series_selector import selector_from_promql
from tsmesh_query.selectors import parse_selector

LIMITS = QueryLimits()
EQ, NE, RE, NRE = (
    common_pb2.MATCH_OP_EQUAL,
    common_pb2.MATCH_OP_NOT_EQUAL,
    common_pb2.MATCH_OP_REGEX,
    common_pb2.MATCH_OP_NOT_REGEX,
)


def _pairs(selector: common_pb2.Selector) -> tuple[str, list[tuple[str, int, str]]]:
    return selector.metric, [(m.name, m.op, m.value) for m in selector.matchers]


@pytest.mark.parametrize(
    ("text", "metric", "matchers"),
    [
        ("cpu", "cpu", []),
        ('cpu{host=~"web.*"}', "cpu", [("host", RE, "web.*")]),
        ('{__name__="cpu", dc!="", zone!~"eu-.*"}', "cpu", [("dc", NE, ""), ("zone", NRE, "eu-.*")]),
        ('cpu{h="a\\"b", u="ünï"}', "cpu", [("h", EQ, 'a"b'), ("u", EQ, "ünï")]),
        ("cpu:rate5m{job='api'}", "cpu:rate5m", [("job", EQ, "api")]),
        ('cpu{host=""}', "cpu", [("host", EQ, "")]),
    ],
)
def test_series_selectors_translate_one_to_one(text: str, metric: str, matchers: list[tuple[str, int, str]]) -> None:
    assert _pairs(selector_from_promql(text, LIMITS)) == (metric, matchers)


def test_an_empty_matcher_value_matches_series_without_the_label_as_in_prometheus() -> None:
    compiled = parse_selector(selector_from_promql('cpu{host=""}', LIMITS), LIMITS)
    assert compiled.matches({"dc": "a"})
    assert not compiled.matches({"host": "web1"})
    absent_or_web = parse_selector(selector_from_promql('cpu{host=~"|web.*"}', LIMITS), LIMITS)
    assert absent_or_web.matches({}) and absent_or_web.matches({"host": "web1"})
    assert not absent_or_web.matches({"host": "db1"})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("rate(cpu[5m])", "must be a series selector"),
        ("cpu[5m]", "must be a series selector"),
        ("cpu offset 5m", "must be a series selector"),
        ("cpu @ 100", "must be a series selector"),
        ("cpu + 1", "must be a series selector"),
        ("sum(cpu)", "must be a series selector"),
        ('{job="api"}', "needs a metric name"),
        ('{__name__=~"cpu.*"}', 'not __name__=~"cpu.*"'),
        ('cpu{__name__="mem"}', "metric name must not be set twice"),
        ('{__name__="cpu", __name__="cpu"}', 'not __name__="cpu"'),
        ("cpu{", "parse error"),
        ('cpu{host=~"("}', "regex"),
        ("", "is empty"),
    ],
)
def test_anything_but_a_series_selector_is_refused_naming_the_problem(text: str, says: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        selector_from_promql(text, LIMITS)
    assert refused.value.field == "promql"
    assert says in refused.value.message


def test_the_structured_selector_limits_apply() -> None:
    tight = QueryLimits(max_matchers=2, max_regex_length=8)
    selector_from_promql('cpu{a="1", b="2"}', tight)
    with pytest.raises(InvalidArgument, match="max_matchers=2"):
        selector_from_promql('cpu{a="1", b="2", c="3"}', tight)
    with pytest.raises(InvalidArgument, match="max_regex_length=8"):
        selector_from_promql('cpu{a=~"abcdefghij"}', tight)
