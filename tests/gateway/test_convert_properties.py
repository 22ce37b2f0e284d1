"""Properties of the JSON conversions: any JSON value gives a request or an ``InvalidArgument`` naming
a field (never another exception), a point and a selector survive the trip to JSON and back, and a
write holding what the store cannot (NUL, a lone surrogate) is refused naming its field (ADR 0210)."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given, settings
from tsmesh.v1 import common_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_gateway import convert

SETTINGS = settings(max_examples=300, deadline=None)
# What orjson can give: nulls, booleans, int64-ish and larger integers, floats, any strings.
SCALARS = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
)
KEYS = st.sampled_from(["points", "metric", "labels", "timestamp_ns", "value", "selector", "matchers", "name", "op"])
# Objects that look like the API's shapes, so that the checks deep inside are reached too.
SHAPED = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5), max_leaves=20
)
UNSTORABLE = st.sampled_from(["\x00", "a\x00", "\ud800", "x\udfffy"])


@given(JSON | SHAPED)
@SETTINGS
def test_any_json_is_a_write_or_a_refusal_naming_a_field(value: object) -> None:
    try:
        request = convert.write_from_json(value)
    except InvalidArgument as exc:
        assert exc.field
        return
    for point in request.points:  # what is forwarded can be serialized (no lone surrogate)
        point.SerializeToString()


@given(JSON | SHAPED)
@SETTINGS
def test_any_json_is_a_selector_or_range_or_a_refusal(value: object) -> None:
    for parse in (convert.selector_from_json, convert.range_from_json):
        try:
            parse(value)
        except InvalidArgument as exc:
            assert exc.field


@given(st.binary(max_size=80) | st.text(max_size=80).map(str.encode))
@SETTINGS
def test_any_query_string_is_a_range_request_or_a_refusal(raw: bytes) -> None:
    try:
        convert.range_from_query(raw)
    except InvalidArgument as exc:
        assert exc.field


POINTS = st.builds(
    common_pb2.Point,
    metric=st.from_regex(r"[a-zA-Z_:][a-zA-Z0-9_:]{0,20}", fullmatch=True),
    labels=st.dictionaries(st.text(min_size=1, max_size=10), st.text(max_size=10), max_size=4),
    timestamp_ns=st.integers(-(2**63), 2**63 - 1),
    value=st.floats(allow_nan=False, allow_infinity=False),
)


@given(st.lists(POINTS, min_size=1, max_size=5))
@SETTINGS
def test_points_survive_json_and_back(points: list[common_pb2.Point]) -> None:
    storable = all("\x00" not in text for p in points for text in (p.metric, *p.labels, *p.labels.values()))
    body = {"points": [convert.point_to_json(p) for p in points]}
    try:
        request = convert.write_from_json(body)
    except InvalidArgument as exc:
        assert not storable and "NUL" in str(exc)
        return
    assert storable and list(request.points) == points


SELECTORS = st.builds(
    common_pb2.Selector,
    metric=st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
    matchers=st.lists(
        st.builds(
            common_pb2.LabelMatcher,
            name=st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
            op=st.sampled_from(list(convert.MATCH_OPS.values())),
            value=st.text(max_size=10),
        ),
        max_size=convert.MAX_MATCHERS,
    ),
)


@given(SELECTORS)
@SETTINGS
def test_selectors_survive_json_and_back(selector: common_pb2.Selector) -> None:
    assert convert.selector_from_json(convert.selector_to_json(selector)) == selector


@given(st.sampled_from(["metric", "name", "value"]), UNSTORABLE, st.integers(0, 3))
@SETTINGS
def test_unstorable_text_in_a_write_is_refused_naming_its_field(where: str, bad: str, index: int) -> None:
    points: list[dict[str, object]] = [
        {"metric": "m", "labels": {"host": "a"}, "timestamp_ns": 1, "value": 1.0} for _ in range(index + 1)
    ]
    target = points[index]
    if where == "metric":
        target["metric"] = "m" + bad
        field = f"points[{index}].metric"
    elif where == "name":
        target["labels"] = {"host" + bad: "a"}
        field = f"points[{index}].labels."
    else:
        target["labels"] = {"host": bad}
        field = f"points[{index}].labels.host"
    try:
        convert.write_from_json({"points": points})
    except InvalidArgument as exc:
        assert exc.field.startswith(field) and "NUL" in str(exc)
    else:
        raise AssertionError(f"{bad!r} in {where} was accepted")
