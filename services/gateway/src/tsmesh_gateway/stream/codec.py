"""The two wire formats of ``/v1/stream``: ``tsmesh.json.v1`` (text) and ``tsmesh.proto.v1`` (binary).

A batch of points is encoded ONCE per upstream message (:class:`Fragments`) and reused for every
socket and subscription it goes to: a JSON array body, or the bytes of ``StreamPoints.points``
(protobuf repeated fields concatenate, so a frame is a small header plus these bytes).
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from google.protobuf.message import DecodeError
from tsmesh.v1 import common_pb2, stream_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.protowire import varint
from tsmesh_gateway.convert import point_to_json, selector_from_json, selector_to_json

JSON_PROTOCOL = "tsmesh.json.v1"
PROTO_PROTOCOL = "tsmesh.proto.v1"
Message = MutableMapping[str, Any]
MAX_PROMQL_LENGTH = 4096
UTF8 = "tsmesh.utf8"  # optional key of a text send message: the same text, already UTF-8 encoded
SEND_NOW = "tsmesh.send_now"  # optional scope key: a synchronous ``(message) -> bool`` write attempt


@dataclass(frozen=True, slots=True)
class ClientMessage:
    """A decoded client message: auth, subscribe, unsubscribe, ping or pong."""

    kind: str
    id: str = ""
    token: str = ""
    selector: common_pb2.Selector | None = None
    promql: str = ""  # a PromQL series selector, given instead of ``selector`` (query parses it)


class Fragments:
    """The points of one upstream batch, encoded lazily once per format."""

    __slots__ = ("_frames", "_json", "_proto", "count", "points")

    def __init__(self, points: Any) -> None:
        self.points = points
        self.count = len(points)
        self._json: bytes | None = None
        self._proto: bytes | None = None
        self._frames: dict[tuple[Any, str, tuple[Fragments, ...]], Message] | None = None

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = b",".join(orjson.dumps(point_to_json(p)) for p in self.points)
        return self._json

    @property
    def proto(self) -> bytes:
        if self._proto is None:
            self._proto = stream_pb2.StreamPoints(points=self.points).SerializeToString()
        return self._proto


def points_frame(codec: Codec, sub_id: str, fragments: list[Fragments]) -> Message:
    """The frame of ``fragments`` for subscription ``sub_id``, encoded once and shared by every socket
    of the feed that queued the same batches under the same subscription id (cached on the last batch).
    """
    last = fragments[-1]
    key = (codec, sub_id, tuple(fragments[:-1]))
    frames = last._frames
    if frames is None:
        frames = last._frames = {}
    else:
        frame = frames.get(key)
        if frame is not None:
            return frame
    frame = frames[key] = codec.points(sub_id, fragments)
    return frame


class Codec(Protocol):
    """Encodes server messages into ASGI send messages and decodes client frames."""

    def decode(self, message: Message) -> ClientMessage: ...
    def id_of(self, message: Message) -> str: ...
    def ack(self, sub_id: str, op: str) -> Message: ...
    def error(self, sub_id: str, code: str, text: str) -> Message: ...
    def ping(self, time_ns: int) -> Message: ...
    def pong(self, time_ns: int) -> Message: ...
    def points(self, sub_id: str, fragments: list[Fragments]) -> Message: ...


def _sub_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise InvalidArgument("id", "must be a string of 1 to 64 characters")
    return value


def _promql(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_PROMQL_LENGTH:
        raise InvalidArgument("promql", f"must be a PromQL series selector of 1 to {MAX_PROMQL_LENGTH} characters")
    return value


class JsonCodec:
    """``{"type": "subscribe", "id": "s1", "selector": {...}}`` and friends, as text frames."""

    def decode(self, message: Message) -> ClientMessage:
        raw = message.get("text")
        if raw is None:
            raise InvalidArgument("frame", "tsmesh.json.v1 expects text frames")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise InvalidArgument("frame", "invalid JSON") from None
        if not isinstance(obj, dict):
            raise InvalidArgument("frame", "must be a JSON object")
        kind = obj.get("type")
        if kind == "auth":
            token = obj.get("token")
            if not isinstance(token, str) or not token:
                raise InvalidArgument("token", "must be a non-empty string")
            return ClientMessage("auth", token=token)
        if kind == "subscribe":
            sub_id = _sub_id(obj.get("id"))
            promql = obj.get("promql")
            if promql is None:
                return ClientMessage("subscribe", id=sub_id, selector=selector_from_json(obj.get("selector")))
            if obj.get("selector") is not None:
                raise InvalidArgument("promql", "give either selector or promql, not both")
            return ClientMessage("subscribe", id=sub_id, promql=_promql(promql))
        if kind == "unsubscribe":
            return ClientMessage("unsubscribe", id=_sub_id(obj.get("id")))
        if kind in ("ping", "pong"):
            return ClientMessage(kind)
        raise InvalidArgument("type", "must be auth, subscribe, unsubscribe, ping or pong")

    def id_of(self, message: Message) -> str:
        """The subscription id of a message that failed to decode, when it has one."""
        try:
            obj = orjson.loads(message.get("text") or b"")
        except orjson.JSONDecodeError:
            return ""
        value = obj.get("id") if isinstance(obj, dict) else None
        return value if isinstance(value, str) and len(value) <= 64 else ""

    def _text(self, obj: dict[str, Any]) -> Message:
        return {"type": "websocket.send", "text": orjson.dumps(obj).decode()}

    def ack(self, sub_id: str, op: str) -> Message:
        return self._text({"type": "ack", "id": sub_id, "op": op})

    def error(self, sub_id: str, code: str, text: str) -> Message:
        return self._text({"type": "error", "id": sub_id, "code": code, "message": text})

    def ping(self, time_ns: int) -> Message:
        return self._text({"type": "ping", "time_ns": time_ns})

    def pong(self, time_ns: int) -> Message:
        return self._text({"type": "pong", "time_ns": time_ns})

    def points(self, sub_id: str, fragments: list[Fragments]) -> Message:
        body = b",".join(f.json for f in fragments)
        head = b'{"type":"points","id":' + orjson.dumps(sub_id) + b',"points":['
        utf8 = head + body + b"]}"
        return {"type": "websocket.send", "text": utf8.decode(), UTF8: utf8}


class ProtoCodec:
    """``StreamClientMessage`` / ``StreamServerMessage`` from ``protos/tsmesh/v1/stream.proto``."""

    def decode(self, message: Message) -> ClientMessage:
        raw = message.get("bytes")
        if raw is None:
            raise InvalidArgument("frame", "tsmesh.proto.v1 expects binary frames")
        parsed = stream_pb2.StreamClientMessage()
        try:
            parsed.ParseFromString(raw)
        except DecodeError:
            raise InvalidArgument("frame", "not a StreamClientMessage") from None
        kind = parsed.WhichOneof("message")
        if kind == "authenticate":
            if not parsed.authenticate.token:
                raise InvalidArgument("token", "must be a non-empty string")
            return ClientMessage("auth", token=parsed.authenticate.token)
        if kind == "subscribe":
            sub_id = _sub_id(parsed.subscribe.id)
            if parsed.subscribe.promql:
                if parsed.subscribe.HasField("selector"):
                    raise InvalidArgument("promql", "give either selector or promql, not both")
                return ClientMessage("subscribe", id=sub_id, promql=_promql(parsed.subscribe.promql))
            selector = selector_from_json(selector_to_json(parsed.subscribe.selector))
            return ClientMessage("subscribe", id=sub_id, selector=selector)
        if kind == "unsubscribe":
            return ClientMessage("unsubscribe", id=_sub_id(parsed.unsubscribe.id))
        if kind in ("ping", "pong"):
            return ClientMessage(kind)
        raise InvalidArgument("message", "must be authenticate, subscribe, unsubscribe, ping or pong")

    def id_of(self, message: Message) -> str:
        """The subscription id of a message that failed to decode, when it has one."""
        parsed = stream_pb2.StreamClientMessage()
        try:
            parsed.ParseFromString(message.get("bytes") or b"")
        except DecodeError:
            return ""
        value = parsed.subscribe.id or parsed.unsubscribe.id
        return value if len(value) <= 64 else ""

    def _bytes(self, message: stream_pb2.StreamServerMessage) -> Message:
        return {"type": "websocket.send", "bytes": message.SerializeToString()}

    def ack(self, sub_id: str, op: str) -> Message:
        return self._bytes(stream_pb2.StreamServerMessage(ack=stream_pb2.StreamAck(id=sub_id, type=op)))

    def error(self, sub_id: str, code: str, text: str) -> Message:
        error = stream_pb2.StreamError(id=sub_id, code=code, message=text)
        return self._bytes(stream_pb2.StreamServerMessage(error=error))

    def ping(self, time_ns: int) -> Message:
        return self._bytes(stream_pb2.StreamServerMessage(ping=stream_pb2.StreamPing(time_ns=time_ns)))

    def pong(self, time_ns: int) -> Message:
        return self._bytes(stream_pb2.StreamServerMessage(pong=stream_pb2.StreamPong(time_ns=time_ns)))

    def points(self, sub_id: str, fragments: list[Fragments]) -> Message:
        encoded_id = sub_id.encode()
        inner = b"\x0a" + varint(len(encoded_id)) + encoded_id + b"".join(f.proto for f in fragments)
        return {"type": "websocket.send", "bytes": b"\x1a" + varint(len(inner)) + inner}


JSON_CODEC = JsonCodec()
PROTO_CODEC = ProtoCodec()


def codec_for(protocol: str) -> Codec:
    return PROTO_CODEC if protocol == PROTO_PROTOCOL else JSON_CODEC
