"""The lean WebSocket listener: ``/v1/stream`` served by the ``websockets`` library on its own port.

Measured here: Granian's WebSocket costs about 150 KiB of server memory per idle connection and
about 65 us of CPU per frame sent; ``websockets`` (compression off) about 13 KiB and 12 us. Every
Granian worker starts this listener in its lifespan with SO_REUSEPORT, so the workers share the
port as they share the HTTP one. The same :class:`StreamEndpoint` serves both ports through a
small ASGI-style adapter (see docs/adr/0401-lean-websocket-listener.md).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import websockets
from websockets.asyncio.server import Server, ServerConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.typing import Subprotocol

from tsmesh_gateway.config import LISTEN_BACKLOG
from tsmesh_gateway.stream.codec import JSON_PROTOCOL, PROTO_PROTOCOL, SEND_NOW, UTF8, Message
from tsmesh_gateway.stream.connection import REFUSED
from tsmesh_gateway.stream.socket_budget import max_sockets
from tsmesh_gateway.stream.socket_limits import GATED, Refusal

log = logging.getLogger(__name__)

AsgiApp = Callable[
    [dict[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]
]
PATH = "/v1/stream"
WIRE = "tsmesh.wire"  # cache key of a shared data message: its complete serialized server frame
RETRY_AFTER_SECONDS = "5"
Gate = Callable[[dict[str, Any]], Refusal | None]


class LeanListener:
    """Serves ``/v1/stream`` on ``host:port`` with websockets 17 (no compression, app-level pings)."""

    def __init__(
        self,
        endpoint: AsgiApp,
        host: str,
        port: int,
        *,
        max_message_bytes: int,
        max_connections: int | None,
        tls: tuple[str, str] | None = None,
        gate: Gate | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._gate = gate
        self._max_connections = max_sockets(max_connections)  # None: the socket budget
        self._host = host
        self._port = port
        self._max_message_bytes = max_message_bytes
        self._tls = tls
        self._server: Server | None = None

    @property
    def port(self) -> int | None:
        if self._server is None:
            return None
        for sock in self._server.sockets:
            return int(sock.getsockname()[1])
        return None

    async def start(self) -> None:
        """Bind (shared with the other workers); a failure is logged and the listener stays off."""
        context = None
        if self._tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._tls)
        try:
            self._server = await websockets.serve(
                self._handle,
                self._host,
                self._port,
                reuse_port=True,
                backlog=LISTEN_BACKLOG,
                subprotocols=[Subprotocol(PROTO_PROTOCOL), Subprotocol(JSON_PROTOCOL)],
                select_subprotocol=_select,
                compression=None,
                ping_interval=None,
                max_size=self._max_message_bytes,
                max_queue=16,
                write_limit=64 * 1024,
                process_request=self._admit,
                ssl=context,
                server_header=None,
            )
        except OSError as exc:
            log.warning(
                "websocket listener not started (TSMESH_GATEWAY_WS_PORT moves it)",
                extra={"port": self._port, "error": str(exc)},
            )

    def _admit(self, connection: ServerConnection, request: Any) -> Any:
        """:func:`_only_stream_path`, then 503 with ``Retry-After`` when this listener already holds
        :func:`max_sockets` upgraded sockets (open or still closing: each holds a descriptor;
        ``TSMESH_GATEWAY_WS_MAX_CONNECTIONS``): refused before the upgrade, cheaply, instead of
        running the worker out of file descriptors (its upstream channels need some too). Sockets
        still in their handshake are not counted: the headroom left for them covers a full backlog.
        Then the fairness ``gate`` (per client address): 429 with ``Retry-After`` and the limit's name."""
        refused = _only_stream_path(connection, request)
        # all_connections: upgraded until their handler ended; len() is O(1), unlike ``connections``
        if refused is None and self._server is not None and len(self._server.all_connections) >= self._max_connections:
            REFUSED.inc()
            refused = connection.respond(503, "this gateway worker is full: retry later or elsewhere\n")
            refused.headers["Retry-After"] = RETRY_AFTER_SECONDS
        if refused is None and self._gate is not None:
            refusal = self._gate({"type": "websocket", "client": _peer(connection), "headers": _headers(request)})
            if refusal is not None:
                refused = connection.respond(429, f"{refusal.limit}: {refusal.message}\n")
                refused.headers["Retry-After"] = str(refusal.retry_after)
        return refused

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=False)
            await self._server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        offered = [p.strip() for v in request.headers.get_all("Sec-WebSocket-Protocol") for p in v.split(",")]
        scope: dict[str, Any] = {
            "type": "websocket",
            "path": request.path,
            "headers": _headers(request),
            "subprotocols": [ws.subprotocol] if ws.subprotocol else [p for p in offered if p],
            "scheme": "wss" if self._tls else "ws",
            "client": _peer(ws),
            SEND_NOW: _sender_now(ws),
            GATED: self._gate is not None,
        }
        connected = False

        async def receive() -> Message:
            nonlocal connected
            if not connected:
                connected = True
                return {"type": "websocket.connect"}
            try:
                data = await ws.recv()
            except websockets.ConnectionClosed as exc:
                return {"type": "websocket.disconnect", "code": exc.rcvd.code if exc.rcvd else 1006}
            if isinstance(data, str):
                return {"type": "websocket.receive", "text": data}
            return {"type": "websocket.receive", "bytes": bytes(data)}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "websocket.send":
                text = message.get("text")
                if text is None:
                    await ws.send(message["bytes"])
                else:
                    utf8 = message.get(UTF8)
                    await ws.send(utf8 if utf8 is not None else text, text=True)
            elif kind == "websocket.close":
                await ws.close(message.get("code", 1000), message.get("reason", ""))

        await self._endpoint(scope, receive, send)


def _headers(request: Any) -> list[tuple[bytes, bytes]]:
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.raw_items()]


def _peer(connection: ServerConnection) -> tuple[str, int] | None:
    """The socket peer as an ASGI ``client``: (host, port)."""
    address = connection.remote_address
    return (str(address[0]), int(address[1])) if address else None


def _sender_now(ws: ServerConnection) -> Callable[[Message], bool]:
    """A synchronous write of one data frame when the socket can take it at once (open, no send in
    progress, no fragmented message, transport not paused by backpressure): no task, no await.
    False means "use the awaiting send", which applies backpressure and close errors.

    A server frame is not masked and compression is off, so a frame's bytes are the same for every
    socket: they are serialized once, cached in the (shared) message under :data:`WIRE`, and
    written straight to each transport.
    """
    protocol = ws.protocol

    def send_now(message: Message) -> bool:
        if ws.send_in_progress is not None or ws.paused or protocol.state is not State.OPEN:
            return False
        if protocol.expect_continuation_frame or protocol.extensions or protocol.writes:
            return False
        wire = message.get(WIRE)
        try:
            if wire is None:
                data = message.get("bytes")
                if data is not None:
                    frame = Frame(Opcode.BINARY, data)
                else:
                    utf8 = message.get(UTF8)
                    frame = Frame(Opcode.TEXT, utf8 if utf8 is not None else message["text"].encode())
                wire = message[WIRE] = frame.serialize(mask=False, extensions=[])
            ws.transport.write(wire)
        except Exception as exc:  # noqa: BLE001 - the awaiting send reports the failure
            log.debug("websocket direct send failed", extra={"error": type(exc).__name__})
            return False
        return True

    return send_now


def _select(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    for protocol in (PROTO_PROTOCOL, JSON_PROTOCOL):
        if protocol in offered:
            return Subprotocol(protocol)
    return None


def _only_stream_path(connection: ServerConnection, request: Any) -> Any:
    """404 for other paths; 400 when the client offers subprotocols but none of ours; else None."""
    if request.path.split("?", 1)[0] != PATH:
        return connection.respond(404, "only /v1/stream is served here\n")
    offered = {p.strip() for v in request.headers.get_all("Sec-WebSocket-Protocol") for p in v.split(",")} - {""}
    if offered and not offered & {PROTO_PROTOCOL, JSON_PROTOCOL}:
        return connection.respond(400, "unsupported subprotocol (tsmesh.json.v1 or tsmesh.proto.v1)\n")
    return None
