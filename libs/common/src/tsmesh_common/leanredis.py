"""A lean Redis connection for hot paths: GET, MGET and EVAL (the gateway's micro-cache), a
command written at once without awaiting (:meth:`LeanRedis.send`: ingest's live PUBLISH),
SUBSCRIBE and PSUBSCRIBE.

redis-py costs about 170 us of CPU per command here (pool, retry and connection machinery in
Python); this client costs a few microseconds: one asyncio Protocol, commands pipelined on one
connection, replies parsed by hiredis, (re)connected lazily. A subscription (:meth:`LeanRedis.subscribe`,
:meth:`LeanRedis.psubscribe`) is a dedicated connection of the same kind that hands each message to a
callback from the socket's read callback, a few microseconds each, no task wake-up (the gateway's
micro-cache follows every generation bump this way, query's live hub every accepted batch).
Anything else keeps using redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis

RETRY_PAUSE_S = 0.5


def command(*parts: bytes) -> bytes:
    """One command in Redis's wire protocol (RESP)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    """Replies go to the waiters in order (hiredis parses them); a lost connection fails them all."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            self.reply(reply)

    def reply(self, reply: Any) -> None:
        if not self.waiters:
            return
        waiter = self.waiters.popleft()
        if waiter.done():
            return
        if isinstance(reply, hiredis.ReplyError):
            waiter.set_exception(reply)
        else:
            waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("redis connection closed")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError("redis connection lost"))


class _Subscriber(_Protocol):
    """A connection in subscribed mode: ``message`` pushes go to ``on_message``, other replies (the
    set-up commands, subscribe confirmations, pongs) to the waiters in order; ``closed`` completes
    and ``on_lost`` is called when the connection goes."""

    def __init__(self, on_message: Callable[[bytes], None], on_lost: Callable[[], None]) -> None:
        super().__init__()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._on_message = on_message
        self._on_lost = on_lost

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # a quiet subscription is long-lived: notice a vanished peer
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def reply(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            self._on_message(reply[2])
        else:
            super().reply(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.closed.done():
            self.closed.set_result(None)
        self._on_lost()


class _PatternSubscriber(_Subscriber):
    """A connection subscribed to a pattern: ``pmessage`` pushes go to ``on_pattern_message(channel,
    data)``."""

    def __init__(self, on_pattern_message: Callable[[bytes, bytes], None], on_lost: Callable[[], None]) -> None:
        super().__init__(_ignore, on_lost)
        self._on_pattern_message = on_pattern_message

    def reply(self, reply: Any) -> None:
        if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
            self._on_pattern_message(reply[2], reply[3])
        else:
            super().reply(reply)


def _ignore(data: bytes) -> None:
    return


class Subscription:
    """A live SUBSCRIBE: :meth:`ping` checks the connection end to end, :attr:`lost` completes when it
    is gone (``on_lost`` has then been called), :meth:`close` ends it."""

    def __init__(self, protocol: _Subscriber) -> None:
        self._protocol = protocol
        self.lost = protocol.closed

    async def ping(self) -> None:
        await _request(self._protocol, command(b"PING"))

    def close(self) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()


async def _request(protocol: _Protocol, command: bytes) -> Any:
    assert protocol.transport is not None
    if protocol.lost is not None:  # lost between being handed out and this write
        raise ConnectionError("redis connection lost")
    waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    protocol.waiters.append(waiter)
    protocol.transport.write(command)
    return await waiter


class LeanRedis:
    """GET/MGET/EVAL over one pipelined connection; a lost connection is re-opened on the next call."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 1.0,
    ) -> None:
        self._host = host
        self._port = port
        self._setup: list[bytes] = []
        if password is not None:
            auth = (b"AUTH", username.encode(), password.encode()) if username else (b"AUTH", password.encode())
            self._setup.append(command(*auth))
        if db:
            self._setup.append(command(b"SELECT", str(db).encode()))
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None
        self._backlog: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._down_until = 0.0  # loop time before which no new connection is attempted

    @classmethod
    def from_url(cls, url: str) -> LeanRedis | None:
        """A client for ``redis://[user:password@]host[:port][/db]``; None for other schemes (TLS, unix)."""
        parts = urlsplit(url)
        if parts.scheme != "redis" or not parts.hostname:
            return None
        path = parts.path.strip("/")
        return cls(
            parts.hostname,
            parts.port or 6379,
            db=int(path) if path.isdigit() else 0,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        if loop.time() < self._down_until:
            raise ConnectionError("redis unreachable (retrying shortly)")
        try:
            async with asyncio.timeout(self._connect_timeout):
                transport, protocol = await loop.create_connection(_Protocol, self._host, self._port)
                try:
                    for setup in self._setup:
                        await _request(protocol, setup)
                except BaseException:
                    transport.close()
                    raise
        except Exception:
            # a fast refusal would otherwise be retried by every caller: one attempt per pause
            self._down_until = loop.time() + RETRY_PAUSE_S
            raise
        self._protocol = protocol
        return protocol

    async def subscribe(
        self,
        channel: str,
        on_message: Callable[[bytes], None],
        on_lost: Callable[[], None],
        *,
        client_name: str | None = None,
    ) -> Subscription:
        """Open a dedicated connection subscribed to ``channel``; returns once Redis confirmed the
        subscription (a message published after that is delivered to ``on_message``). ``on_lost``
        is called when the connection goes, whoever closes it. ``client_name`` names the connection
        in ``CLIENT LIST``."""
        return await self._subscribe(
            lambda: _Subscriber(on_message, on_lost), command(b"SUBSCRIBE", channel.encode()), client_name
        )

    async def psubscribe(
        self,
        pattern: str,
        on_message: Callable[[bytes, bytes], None],
        on_lost: Callable[[], None],
        *,
        client_name: str | None = None,
    ) -> Subscription:
        """:meth:`subscribe` to the channels matching ``pattern``: ``on_message(channel, data)``."""
        return await self._subscribe(
            lambda: _PatternSubscriber(on_message, on_lost), command(b"PSUBSCRIBE", pattern.encode()), client_name
        )

    async def _subscribe(
        self, protocol_factory: Callable[[], _Subscriber], subscribe: bytes, client_name: str | None
    ) -> Subscription:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            transport, protocol = await loop.create_connection(protocol_factory, self._host, self._port)
            try:
                for setup in self._setup:
                    await _request(protocol, setup)
                if client_name is not None:
                    await _request(protocol, command(b"CLIENT", b"SETNAME", client_name.encode()))
                await _request(protocol, subscribe)
            except BaseException:
                transport.close()
                raise
        return Subscription(protocol)

    @property
    def in_flight(self) -> int:
        """Commands sent (or waiting for the connection) whose replies have not arrived."""
        protocol = self._protocol
        waiting = len(self._backlog)
        return waiting + (len(protocol.waiters) if protocol is not None and protocol.lost is None else 0)

    def send(self, wire: bytes) -> asyncio.Future[Any]:
        """Write ``wire`` (exactly one command, see :func:`command`) at once on the open connection,
        without a task or an await; the future gets its reply. With no connection open, the
        command waits for the one being opened (opened now if need be) and fails if that fails;
        after a failed attempt, commands fail at once for :data:`RETRY_PAUSE_S`."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Any] = loop.create_future()
        protocol = self._protocol
        if protocol is not None and protocol.lost is None and not self._backlog:
            protocol.waiters.append(waiter)
            protocol.transport.write(wire)
            return waiter
        self._backlog.append((wire, waiter))
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush_backlog())
        return waiter

    async def _flush_backlog(self) -> None:
        try:
            protocol = await self._connection()
            if protocol.lost is not None:  # lost in the loop turns since it was opened
                raise ConnectionError("redis connection lost")
        except BaseException as exc:
            self._fail_backlog(ConnectionError(f"redis unreachable: {type(exc).__name__}"))
            if not isinstance(exc, Exception):
                raise
            return
        self._flusher = None
        waiting, self._backlog = self._backlog, []
        for wire, waiter in waiting:
            protocol.waiters.append(waiter)
            protocol.transport.write(wire)

    def _fail_backlog(self, exc: Exception) -> None:
        self._flusher = None
        failed, self._backlog = self._backlog, []
        for _, waiter in failed:
            if not waiter.done():
                waiter.set_exception(exc)

    async def get(self, key: str) -> bytes | None:
        reply: bytes | None = await _request(await self._connection(), command(b"GET", key.encode()))
        return reply

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        reply: list[bytes | None] = await _request(
            await self._connection(), command(b"MGET", *(k.encode() for k in keys))
        )
        return reply

    async def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any:
        """``EVAL`` (redis-py's signature): the script's reply."""
        parts = (b"EVAL", script.encode(), str(numkeys).encode(), *(a.encode() for a in keys_and_args))
        return await _request(await self._connection(), command(*parts))

    async def aclose(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
        self._fail_backlog(ConnectionError("redis client closed"))
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
