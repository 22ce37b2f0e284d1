"""Client side of the gateway WebSocket benchmark, run in several processes (open files are capped
at 20,000 per process): each process holds a share of the sockets, subscribes them, and records
``(point timestamp, receive time)`` pairs for every delivered point (``tsmesh.proto.v1`` frames).

Each socket is a plain asyncio protocol driving the ``websockets`` sans-I/O client: no task per
socket, and the receive time is taken when the frame's bytes reach the process (``data_received``),
not after a library queue and a task switch. Through ``websockets``' asyncio client, a burst of 100
frames into one process stamped its last frame several milliseconds late, which a real subscriber
(its own process, its own machine) never sees.

Commands arrive on a pipe: ``connect``, ``subscribe``, ``record``, ``collect``, ``close``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from array import array
from multiprocessing.connection import Connection

import uvloop
from tsmesh.v1 import stream_pb2
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

SUBPROTOCOL = Subprotocol("tsmesh.proto.v1")


class Recorder:
    """Where every socket of the process records: ``store[0]`` is swapped when a recording starts."""

    def __init__(self) -> None:
        self.store: array[int] = array("q")
        self.recording = False


class Socket(asyncio.Protocol):
    """One subscriber socket that records what it receives."""

    def __init__(self, url: str, headers: dict[str, str], recorder: Recorder) -> None:
        self.ws = ClientProtocol(parse_uri(url), subprotocols=[SUBPROTOCOL], max_size=1 << 20)
        self._headers = headers
        self._recorder = recorder
        self._message = stream_pb2.StreamServerMessage()
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.acked: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        request = self.ws.connect()
        request.headers.update(self._headers)
        self.ws.send_request(request)
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        for data in self.ws.data_to_send():
            if data:
                self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        now = time.time_ns()
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                self._opened(event)
            elif event.opcode is Opcode.BINARY:
                self._frame(event.data, now)
        self._send()  # pongs, and the close handshake's reply

    def _opened(self, response: Response) -> None:
        if self.opened.done():
            return
        if self.ws.handshake_exc is not None:
            self.opened.set_exception(self.ws.handshake_exc)
        elif response.headers.get("Sec-WebSocket-Protocol") != SUBPROTOCOL:
            self.opened.set_exception(RuntimeError(f"subprotocol not agreed: {response.status_code}"))
        else:
            self.opened.set_result(None)

    def _frame(self, frame: bytes | bytearray | memoryview, now: int) -> None:
        message = self._message
        message.ParseFromString(bytes(frame))
        kind = message.WhichOneof("message")
        if kind == "points":
            recorder = self._recorder
            if recorder.recording:
                store = recorder.store
                for point in message.points.points:
                    store.append(point.timestamp_ns)
                    store.append(now)
        elif kind == "ack" and not self.acked.done():
            self.acked.set_result(None)

    def send(self, payload: bytes) -> None:
        self.ws.send_binary(payload)
        self._send()

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.ws.send_close()
        self._send()
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.acked):
            if not future.done():
                future.set_exception(exc or ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)


async def _connect(
    url: str, token: str, count: int, local_ip: str, recorder: Recorder, concurrency: int = 200
) -> list[Socket]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}
    uri = parse_uri(url)

    async def one() -> Socket:
        async with gate:
            for attempt in range(5):
                try:
                    _, sock = await loop.create_connection(
                        lambda: Socket(url, headers, recorder), uri.host, uri.port, local_addr=(local_ip, 0)
                    )
                    await asyncio.wait_for(sock.opened, 60)
                    return sock
                except (OSError, TimeoutError, ConnectionError):
                    if attempt == 4:
                        raise
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError("unreachable")

    return await asyncio.gather(*(one() for _ in range(count)))


def _gc_pauses() -> list[float]:
    """CPU time (ms) of every garbage collection from now on (a long one delays every frame)."""
    pauses: list[float] = []
    started = [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time_ns()
        else:
            pauses.append((time.thread_time_ns() - started[0]) / 1e6)

    gc.callbacks.append(on_gc)
    return pauses


async def _serve(pipe: Connection, url: str, token: str, first_index: int, count: int, local_ip: str) -> None:
    loop = asyncio.get_running_loop()
    pauses = _gc_pauses()
    sockets: list[Socket] = []
    recorder = Recorder()
    while True:
        command, arg = await loop.run_in_executor(None, pipe.recv)
        if command == "connect":
            started = time.monotonic()
            sockets = await _connect(url, token, count, local_ip, recorder)
            gc.collect()
            gc.freeze()  # the sockets live for the whole run: keep them out of every collection
            pipe.send(("connected", time.monotonic() - started))
        elif command == "subscribe":
            # socket i watches selector i % selectors: the subscribers of one selector are spread
            # over the client processes, as independent subscribers would be
            selectors = int(arg)
            for offset, sock in enumerate(sockets):
                message = stream_pb2.StreamClientMessage()
                message.subscribe.id = "s"
                message.subscribe.selector.metric = f"bench_ws_{(first_index + offset) % selectors}"
                sock.send(message.SerializeToString())
            done = await asyncio.gather(*(asyncio.wait_for(s.acked, 60) for s in sockets), return_exceptions=True)
            pipe.send(("subscribed", sum(1 for d in done if d is None)))
        elif command == "record":
            if arg:
                pauses.clear()
                recorder.store = array("q")
            recorder.recording = bool(arg)
            pipe.send(("recording", arg))
        elif command == "collect":
            pipe.send(("samples", recorder.store.tobytes()))
            if pauses:
                print(f"client {local_ip}: {len(pauses)} collections, longest {max(pauses):.1f} ms CPU", flush=True)
        elif command == "close":
            for sock in sockets:
                sock.close()
            if sockets:
                await asyncio.wait([s.closed for s in sockets], timeout=30)
            pipe.send(("closed", len(sockets)))
            return


def client_process(pipe: Connection, url: str, token: str, first_index: int, count: int, local_ip: str) -> None:
    """Entry point of one client process."""
    uvloop.run(_serve(pipe, url, token, first_index, count, local_ip))
