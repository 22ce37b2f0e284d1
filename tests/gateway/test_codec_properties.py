"""Properties of the WebSocket codecs (``tsmesh_gateway.stream.codec``): any client frame decodes or is
refused with ``InvalidArgument`` (``id_of`` never fails), a client message encoded by the protocol's
rules decodes to itself, and every server frame parses back to what was encoded."""

from __future__ import annotations

import json

import hypothesis.strategies as st
import orjson
from hypothesis import given, settings
from test_convert_properties import JSON, POINTS, SELECTORS, SHAPED
from tsmesh.v1 import common_pb2, stream_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_gateway import convert
from tsmesh_gateway.stream.codec import JSON_CODEC, PROTO_CODEC, ClientMessage, Codec, Fragments, points_frame

SETTINGS = settings(max_examples=300, deadline=None)
IDS = st.text(min_size=1, max_size=64)
TYPES = st.sampled_from(["auth", "subscribe", "unsubscribe", "ping", "pong", "other"])


def _decodes_or_refuses(codec: Codec, message: dict[str, object]) -> ClientMessage | None:
    codec.id_of(message)
    try:
        return codec.decode(message)
    except InvalidArgument as exc:
        assert exc.field
        return None


def _frame(kind: str, value: object) -> str:
    return json.dumps({"type": kind, "id": value, "selector": value, "token": value})


@given(st.text(max_size=100) | st.builds(_frame, TYPES, SHAPED | JSON))
@SETTINGS
def test_any_text_frame_decodes_or_is_refused(text: str) -> None:
    _decodes_or_refuses(JSON_CODEC, {"type": "websocket.receive", "text": text})
    _decodes_or_refuses(PROTO_CODEC, {"type": "websocket.receive", "text": text})


@given(st.binary(max_size=100))
@SETTINGS
def test_any_binary_frame_decodes_or_is_refused(data: bytes) -> None:
    _decodes_or_refuses(PROTO_CODEC, {"type": "websocket.receive", "bytes": data})
    _decodes_or_refuses(JSON_CODEC, {"type": "websocket.receive", "bytes": data})


@given(IDS, SELECTORS, st.text(min_size=1, max_size=40))
@SETTINGS
def test_client_messages_decode_to_what_was_encoded(sub_id: str, selector: common_pb2.Selector, token: str) -> None:
    as_json = [
        ({"type": "subscribe", "id": sub_id, "selector": convert.selector_to_json(selector)}, "subscribe"),
        ({"type": "unsubscribe", "id": sub_id}, "unsubscribe"),
        ({"type": "auth", "token": token}, "auth"),
    ]
    for obj, kind in as_json:
        decoded = JSON_CODEC.decode({"text": orjson.dumps(obj).decode()})
        assert decoded.kind == kind
        assert decoded.id == (sub_id if kind != "auth" else "") and decoded.token == (token if kind == "auth" else "")
        assert decoded.selector == (selector if kind == "subscribe" else None)
    as_proto = [
        stream_pb2.StreamClientMessage(subscribe=stream_pb2.StreamSubscribe(id=sub_id, selector=selector)),
        stream_pb2.StreamClientMessage(unsubscribe=stream_pb2.StreamUnsubscribe(id=sub_id)),
        stream_pb2.StreamClientMessage(authenticate=stream_pb2.StreamAuthenticate(token=token)),
    ]
    for message, (_, kind) in zip(as_proto, as_json, strict=True):
        decoded = PROTO_CODEC.decode({"bytes": message.SerializeToString()})
        assert (decoded.kind, decoded.selector) == (kind, selector if kind == "subscribe" else None)
        assert PROTO_CODEC.id_of({"bytes": message.SerializeToString()}) == (sub_id if kind != "auth" else "")


@given(IDS, st.lists(st.lists(POINTS, min_size=1, max_size=3), min_size=1, max_size=3))
@SETTINGS
def test_points_frames_parse_back_to_the_points(sub_id: str, batches: list[list[common_pb2.Point]]) -> None:
    fragments = [Fragments(points) for points in batches]
    everything = [p for points in batches for p in points]
    frame = points_frame(JSON_CODEC, sub_id, fragments)
    obj = orjson.loads(frame["text"])
    assert (obj["type"], obj["id"]) == ("points", sub_id)
    assert obj["points"] == [convert.point_to_json(p) for p in everything]
    assert points_frame(JSON_CODEC, sub_id, fragments) is frame  # encoded once
    proto = stream_pb2.StreamServerMessage.FromString(points_frame(PROTO_CODEC, sub_id, fragments)["bytes"])
    assert (proto.points.subscription_id, list(proto.points.points)) == (sub_id, everything)


@given(IDS, st.text(max_size=20), st.text(max_size=40), st.integers(-(2**63), 2**63 - 1))
@SETTINGS
def test_control_frames_parse_back(sub_id: str, code: str, text: str, time_ns: int) -> None:
    assert orjson.loads(JSON_CODEC.ack(sub_id, code)["text"]) == {"type": "ack", "id": sub_id, "op": code}
    error = {"type": "error", "id": sub_id, "code": code, "message": text}
    assert orjson.loads(JSON_CODEC.error(sub_id, code, text)["text"]) == error
    assert orjson.loads(JSON_CODEC.ping(time_ns)["text"]) == {"type": "ping", "time_ns": time_ns}
    assert orjson.loads(JSON_CODEC.pong(time_ns)["text"]) == {"type": "pong", "time_ns": time_ns}
    parse = stream_pb2.StreamServerMessage.FromString
    ack = parse(PROTO_CODEC.ack(sub_id, code)["bytes"]).ack
    assert (ack.id, ack.type) == (sub_id, code)
    failed = parse(PROTO_CODEC.error(sub_id, code, text)["bytes"]).error
    assert (failed.id, failed.code, failed.message) == (sub_id, code, text)
    assert parse(PROTO_CODEC.ping(time_ns)["bytes"]).ping.time_ns == time_ns
    assert parse(PROTO_CODEC.pong(time_ns)["bytes"]).pong.time_ns == time_ns


@given(st.text(min_size=1, max_size=200).filter(str.strip))
def test_a_promql_subscription_passes_its_text_through_both_codecs(text: str) -> None:
    as_json = JSON_CODEC.decode({"text": orjson.dumps({"type": "subscribe", "id": "s", "promql": text}).decode()})
    frame = stream_pb2.StreamClientMessage(subscribe={"id": "s", "promql": text}).SerializeToString()
    as_proto = PROTO_CODEC.decode({"bytes": frame})
    assert as_json == as_proto == ClientMessage("subscribe", id="s", promql=text)


def test_a_subscription_gives_a_selector_or_promql_not_both_nor_an_empty_one() -> None:
    both_json = {"type": "subscribe", "id": "s", "promql": "cpu", "selector": {"metric": "cpu"}}
    both_proto = stream_pb2.StreamClientMessage(subscribe={"id": "s", "promql": "cpu", "selector": {"metric": "cpu"}})
    for codec, message in (
        (JSON_CODEC, {"text": orjson.dumps(both_json).decode()}),
        (PROTO_CODEC, {"bytes": both_proto.SerializeToString()}),
        (JSON_CODEC, {"text": '{"type": "subscribe", "id": "s", "promql": " "}'}),
        (JSON_CODEC, {"text": '{"type": "subscribe", "id": "s", "promql": 7}'}),
        (JSON_CODEC, {"text": orjson.dumps({"type": "subscribe", "id": "s", "promql": "c" * 4097}).decode()}),
    ):
        try:
            codec.decode(message)
        except InvalidArgument as refused:
            assert refused.field == "promql"
        else:
            raise AssertionError(f"accepted {message}")
