"""A lean Redis connection for the hot read of the micro-cache: GET, MGET and EVAL only.

redis-py costs about 170 us of CPU per command here (pool, retry and connection machinery in
Python); this client costs a few microseconds: one asyncio Protocol, commands pipelined on one
connection, replies parsed by hiredis, (re)connected lazily. Anything else keeps using redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class _Protocol(asyncio.Protocol):
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
            if not self.waiters:
                continue
            waiter = self.waiters.popleft()
            if waiter.done():
                continue
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
            self._setup.append(_command(*auth))
        if db:
            self._setup.append(_command(b"SELECT", str(db).encode()))
        self._connect_timeout = connect_timeout
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[_Protocol] | None = None

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
        async with asyncio.timeout(self._connect_timeout):
            _, protocol = await loop.create_connection(_Protocol, self._host, self._port)
            for setup in self._setup:
                await self._send(protocol, setup)
        self._protocol = protocol
        return protocol

    async def _send(self, protocol: _Protocol, command: bytes) -> Any:
        assert protocol.transport is not None
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        protocol.waiters.append(waiter)
        protocol.transport.write(command)
        return await waiter

    async def get(self, key: str) -> bytes | None:
        reply: bytes | None = await self._send(await self._connection(), _command(b"GET", key.encode()))
        return reply

    async def mget(self, keys: list[str]) -> list[bytes | None]:
        reply: list[bytes | None] = await self._send(
            await self._connection(), _command(b"MGET", *(k.encode() for k in keys))
        )
        return reply

    async def eval(self, script: str, numkeys: int, *keys_and_args: str) -> Any:
        """``EVAL`` (redis-py's signature): the script's reply."""
        parts = (b"EVAL", script.encode(), str(numkeys).encode(), *(a.encode() for a in keys_and_args))
        return await self._send(await self._connection(), _command(*parts))

    async def aclose(self) -> None:
        protocol, self._protocol = self._protocol, None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(BaseException):
                await self._connecting
