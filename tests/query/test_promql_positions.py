"""Parse errors name ``line:column`` as Prometheus does (``promql/positions.py``), held to Prometheus
itself: wherever tsmesh gives a position, it is Prometheus's, and most malformed queries get one."""

from __future__ import annotations

import json
import re
import shutil
import urllib.error
import urllib.parse
from pathlib import Path

import pytest
from local_prometheus import Dataset, Prometheus

from tsmesh_common.errors import InvalidArgument
from tsmesh_query.promql.parse import parse_query

MALFORMED = [
    "sum(rate(x[5m])",
    "foo{",
    "rate(x[5x])",
    "unknownfn(x)",
    "1 +",
    "x[5m",
    "sum by (a b) (x)",
    "x offset",
    '"abc',
    "rate(x[5m]) + ",
    'x{a="b"',
    "sum(x) by",
    'x{a~"b"}',
    'x{a="~"} + y{b~"c"}',
    "sum(x",
    "a\n + unknownfn(b)",
    'x{a="é"} + foo(',
    "max_over_time(x[5m:1m]",
    "x and on(",
    "rate(x[1q])",
]
POSITION = re.compile(r"(\d+:\d+): parse error")
pytestmark = pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian prometheus (make tools) not installed")


def ours(query: str) -> str:
    with pytest.raises(InvalidArgument) as refused:
        parse_query(query)
    return refused.value.message


def theirs(prometheus: Prometheus, query: str) -> str:
    try:
        prometheus.get("/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": "1700000000"}))
    except urllib.error.HTTPError as exc:
        return str(json.loads(exc.read())["error"])
    raise AssertionError(f"prometheus accepted {query!r}")


def test_parse_error_positions_are_prometheus_positions(tmp_path: Path) -> None:
    data = Dataset([("x", {"a": "b"}, [(1_700_000_000_000, 1.0)])], 1_700_000_000_000, 1_700_000_000_000)
    prometheus = Prometheus(tmp_path, data)
    try:
        answers = [(query, ours(query), theirs(prometheus, query)) for query in MALFORMED]
    finally:
        prometheus.close()
    placed = 0
    for query, mine, reference in answers:
        found = POSITION.search(mine)
        if found is None:
            assert "parse error: " in mine, (query, mine)
            continue
        placed += 1
        expected = POSITION.search(reference)
        assert expected is not None and found.group(1) == expected.group(1), (query, mine, reference)
    assert placed >= 15, [(q, m) for q, m, _ in answers]
