"""The raw ASGI WebSocket endpoint of ``/v1/stream`` (no per-socket framework objects, to keep
idle connections small).

Authentication: the ``Authorization`` header, or a first ``auth`` message within the configured
time (else close 4401). A later ``auth`` message replaces the token (same tenant only), so a
client can refresh before expiry. The socket then follows the new token alone (its revocation,
its expiry); every live subscription is checked again against the new principal, and those it may
not read end with an error frame (ADR 0453). Messages: subscribe, unsubscribe, ping, pong. When
the token cannot be checked (auth unreachable) the socket closes with 1013 (try again later).

Fairness (:mod:`tsmesh_gateway.stream.socket_limits`): sockets per client address and handshakes
per address are checked when a socket arrives, sockets per token when it authenticates; a refused
socket is closed with 4429.
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from starlette.types import Receive, Scope, Send

from tsmesh_common.context import Principal
from tsmesh_common.errors import InvalidArgument, PermissionDenied, TsmeshError, Unauthenticated
from tsmesh_gateway.clientaddr import ClientAddress, peer_address
from tsmesh_gateway.config import StreamConfig
from tsmesh_gateway.guard import PrincipalCache, authorization_token
from tsmesh_gateway.stream.codec import JSON_PROTOCOL, PROTO_PROTOCOL, SEND_NOW, ClientMessage, Message, codec_for
from tsmesh_gateway.stream.connection import (
    CLOSE_BAD_MESSAGE,
    CLOSE_UNAUTHENTICATED,
    REFUSED,
    Connection,
)
from tsmesh_gateway.stream.hub import Hub
from tsmesh_gateway.stream.socket_budget import max_sockets
from tsmesh_gateway.stream.socket_limits import CLOSE_LIMITED, GATED, Refusal, SocketLimits

log = logging.getLogger(__name__)

CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_AGAIN_LATER = 1013


class SocketRefused(Exception):
    """A fairness limit refuses this socket (closed with 4429)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.reason)
        self.refusal = refusal


def may_read(principal: Principal) -> bool:
    return "read" in principal.scopes or "admin" in principal.scopes


class StreamEndpoint:
    """ASGI app for ``/v1/stream``."""

    def __init__(
        self,
        hub: Hub,
        principals: PrincipalCache,
        cfg: StreamConfig,
        *,
        client_address: ClientAddress = peer_address,
    ) -> None:
        self._hub = hub
        self._principals = principals
        self._cfg = cfg
        self._client_address = client_address
        self.limits = SocketLimits(cfg)
        self._max_connections = max_sockets(cfg.max_connections)

    def gate(self, scope: Scope) -> Refusal | None:
        """Before an upgrade (the lean listener): spend the client address's handshake budget and
        check its socket budget."""
        return self.limits.handshake(self._client_address(scope))

    def full(self) -> bool:
        """This worker holds its :func:`max_sockets`: new ones are refused (1013 / 503)."""
        return len(self._hub.connections) >= self._max_connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        admitted = await self._accept(scope, send)
        if admitted is None:
            return
        protocol, address = admitted
        conn = Connection(send, codec_for(protocol), self._cfg.send_queue_points)
        conn.send_now = scope.get(SEND_NOW)
        conn.handler = asyncio.current_task()
        self._hub.register(conn)
        counted = self.limits.opened(address)
        try:
            header = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    header = value.decode("latin-1")
                    break
            if header is not None:
                await self._authenticate(conn, authorization_token(header), header)
            else:
                await self._await_auth(conn, receive)
            while not conn.closed:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._handle(conn, message)
        except Unauthenticated as exc:
            conn.mark_closed(CLOSE_UNAUTHENTICATED, exc.message, "unauthenticated")
        except SocketRefused as exc:
            conn.mark_closed(CLOSE_LIMITED, exc.refusal.reason, "limited")
        except TsmeshError as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE:
                conn.mark_closed(CLOSE_TRY_AGAIN_LATER, "authentication unavailable, retry later", "auth_unavailable")
            else:
                conn.mark_closed(CLOSE_INTERNAL, "authentication failed", "auth_failed")
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if conn.close_code is None or task is None:
                raise
            task.uncancel()
        finally:
            conn.closed = True
            self._hub.unregister(conn)
            self.limits.closed(counted)
        if conn.close_code is not None:
            await conn.finish_close()

    async def _accept(self, scope: Scope, send: Send) -> tuple[str, str] | None:
        """Accept the upgrade with the preferred offered subprotocol, then keep the socket only when
        this worker has room and the client address its budgets: (subprotocol, client address), or
        None once the socket is closed."""
        offered = scope.get("subprotocols") or []
        protocol = next((p for p in (PROTO_PROTOCOL, JSON_PROTOCOL) if p in offered), None)
        if offered and protocol is None:
            await send({"type": "websocket.close", "code": CLOSE_BAD_MESSAGE, "reason": "unsupported subprotocol"})
            return None
        accept: dict[str, object] = {"type": "websocket.accept"}
        if protocol is not None:
            accept["subprotocol"] = protocol
        await send(accept)
        if self.full():
            # Granian's port cannot refuse before the upgrade (the lean listener answers 503 there,
            # but handshakes it admitted together may still end up here)
            REFUSED.inc()
            await send({"type": "websocket.close", "code": CLOSE_TRY_AGAIN_LATER, "reason": "gateway worker full"})
            return None
        address = self._client_address(scope)
        refusal = None if scope.get(GATED) else self.limits.handshake(address)
        if refusal is not None:
            await send({"type": "websocket.close", "code": CLOSE_LIMITED, "reason": refusal.reason})
            return None
        return protocol or JSON_PROTOCOL, address

    async def _await_auth(self, conn: Connection, receive: Receive) -> None:
        try:
            async with asyncio.timeout(self._cfg.auth_timeout_seconds):
                message = await receive()
        except TimeoutError:
            raise Unauthenticated("authentication required within the time limit") from None
        if message["type"] == "websocket.disconnect":
            conn.closed = True
            return
        try:
            decoded = conn.codec.decode(message)
        except InvalidArgument as exc:
            raise Unauthenticated(f"first message must authenticate ({exc.message})") from None
        if decoded.kind != "auth":
            raise Unauthenticated("first message must authenticate")
        await self._authenticate(conn, decoded.token, f"Bearer {decoded.token}")
        conn.push(conn.codec.ack("", "auth"))

    async def _authenticate(self, conn: Connection, token: str, authorization: str) -> Principal:
        principal = await self._principals.authenticate(token)
        previous = conn.principal
        if previous is not None and previous.tenant_id != principal.tenant_id:
            raise Unauthenticated("a socket cannot change tenant")
        if previous is None or previous.token_id != principal.token_id:
            refusal = self.limits.token(len(self._hub.by_token.get(principal.token_id, ())))
            if refusal is not None:
                raise SocketRefused(refusal)
        conn.principal = principal
        conn.authorization = authorization
        self._hub.identify(conn, previous.token_id if previous is not None else None)
        if previous is not None:
            self._recheck_subscriptions(conn, principal)
        return principal

    def _recheck_subscriptions(self, conn: Connection, principal: Principal) -> None:
        """After a re-authentication: end, each with an error frame, the subscriptions the new
        principal may not read (its scopes, its tenant), before the next point is queued."""
        readable = may_read(principal)
        for sub_id, feed in list(conn.subscriptions.items()):
            if readable and feed.key[0] == principal.tenant_id:
                continue
            self._hub.unsubscribe(conn, sub_id)
            conn.push(
                conn.codec.error(
                    sub_id, "PERMISSION_DENIED", "subscription ended: the new token lacks scope 'read' for it"
                )
            )

    async def _handle(self, conn: Connection, message: Message) -> None:
        payload = message.get("text") if message.get("text") is not None else message.get("bytes")
        if payload is not None and len(payload) > self._cfg.max_message_bytes:
            conn.mark_closed(CLOSE_TOO_BIG, "message too big", "too_big")
            return
        conn.last_seen = time.monotonic()
        conn.ping_due = False
        decoded: ClientMessage | None = None
        try:
            decoded = conn.codec.decode(message)
            await self._dispatch(conn, decoded)
        except Unauthenticated:
            raise
        except TsmeshError as exc:
            sub_id = decoded.id if decoded is not None else conn.codec.id_of(message)
            conn.push(conn.codec.error(sub_id, exc.code.name, exc.message))

    async def _dispatch(self, conn: Connection, decoded: ClientMessage) -> None:
        codec = conn.codec
        if decoded.kind == "ping":
            conn.push(codec.pong(time.time_ns()))
        elif decoded.kind == "pong":
            return
        elif decoded.kind == "auth":
            await self._authenticate(conn, decoded.token, f"Bearer {decoded.token}")
            conn.push(codec.ack("", "auth"))
        elif decoded.kind == "subscribe":
            assert conn.principal is not None
            if not may_read(conn.principal):
                raise PermissionDenied("scope 'read' required")
            if decoded.id in conn.subscriptions:
                raise InvalidArgument("id", f"subscription {decoded.id!r} already exists")
            if len(conn.subscriptions) >= self._cfg.max_subscriptions:
                raise InvalidArgument("id", f"at most {self._cfg.max_subscriptions} subscriptions per socket")
            selector = decoded.selector
            if selector is None:
                selector = await self._hub.parse_promql(conn, decoded.promql)
            if await self._hub.subscribe(conn, decoded.id, selector):
                conn.push(codec.ack(decoded.id, "subscribe"))
        elif decoded.kind == "unsubscribe":
            if not self._hub.unsubscribe(conn, decoded.id):
                raise InvalidArgument("id", f"no subscription {decoded.id!r}")
            conn.push(codec.ack(decoded.id, "unsubscribe"))
