"""Client side of the gateway WebSocket benchmark, run in several processes (open files are capped
at 20,000 per process): each process holds a share of the sockets, subscribes them, and records,
for every delivered point (``tsmesh.proto.v1`` frames), when its frame reached the client's socket
(the kernel's receive time) and when the process read it.

A frame is "received" when it reached the client's socket (on loopback the kernel stamps it
inside the gateway's send call, so this is the moment the server handed it to the network: no
wire time is in it, as on one host there is none): these client processes share the 2 cores with
the whole mesh, and a burst of 50 frames into one process stamped the last one a
millisecond or more after it arrived (its predecessors' processing, the process's wake-up), which a
real subscriber, on its own machine, never sees. Both figures are reported. Through
``websockets``' asyncio client (a task per socket) the same burst stamped its last frame several
milliseconds late; this client has no task per socket at all.

Commands arrive on a pipe: ``connect``, ``subscribe``, ``record``, ``collect``, ``lost``, ``close``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
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
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; Python's socket module lacks the name
STAMP = struct.Struct("qq")  # struct timespec
STAMP_SPACE = socket.CMSG_SPACE(STAMP.size)
RECV_BYTES = 65536


class Recorder:
    """Where every socket of the process records; both arrays are replaced when a recording starts.

    ``arrived`` holds (point timestamp, kernel receive time) pairs: when the frame's bytes reached
    the client's socket (``SO_TIMESTAMPNS``; for a read that covers several frames, the time of
    the last one, so never early). ``read`` holds (point timestamp, time the process read it):
    the first plus this client process's own scheduling, which says nothing about the server.
    """

    def __init__(self) -> None:
        self.arrived: array[int] = array("q")
        self.read: array[int] = array("q")
        self.recording = False


class Socket:
    """One subscriber socket on a plain non-blocking socket: the ``websockets`` sans-I/O client does
    the handshake and the framing, the loop calls :meth:`readable` (no task per socket), and each
    read brings the kernel's receive time with it (``recvmsg``)."""

    def __init__(self, sock: socket.socket, url: str, headers: dict[str, str], recorder: Recorder) -> None:
        self.sock = sock
        self.ws = ClientProtocol(parse_uri(url), subprotocols=[SUBPROTOCOL], max_size=1 << 20)
        self._headers = headers
        self._recorder = recorder
        self._message = stream_pb2.StreamServerMessage()
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.acked: asyncio.Future[None] = loop.create_future()
        self.closed = False

    def start(self) -> None:
        request = self.ws.connect()
        request.headers.update(self._headers)
        self.ws.send_request(request)
        self._send()
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.readable)

    def _send(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.sock.sendall(data)  # small control frames: the socket buffer takes them

    def readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(RECV_BYTES, STAMP_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        now = time.time_ns()
        if not data:
            self._lost(ConnectionError("closed by the server"))
            return
        arrived = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= STAMP.size:
                seconds, nanoseconds = STAMP.unpack_from(value)
                arrived = seconds * 1_000_000_000 + nanoseconds
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Response):
                self._opened(event)
            elif event.opcode is Opcode.BINARY:
                self._frame(event.data, arrived, now)
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

    def _frame(self, frame: bytes | bytearray | memoryview, arrived: int, read: int) -> None:
        message = self._message
        message.ParseFromString(bytes(frame))
        kind = message.WhichOneof("message")
        if kind == "points":
            recorder = self._recorder
            if recorder.recording:
                for point in message.points.points:
                    recorder.arrived.append(point.timestamp_ns)
                    recorder.arrived.append(arrived)
                    recorder.read.append(point.timestamp_ns)
                    recorder.read.append(read)
        elif kind == "ack" and not self.acked.done():
            self.acked.set_result(None)
        elif kind == "ping":  # the gateway closes a socket that stays silent (4408) after its pings
            answer = stream_pb2.StreamClientMessage()
            answer.pong.time_ns = message.ping.time_ns
            self.send(answer.SerializeToString())

    def send(self, payload: bytes) -> None:
        self.ws.send_binary(payload)
        self._send()

    def close(self) -> None:
        if self.closed:
            return
        with contextlib.suppress(OSError):
            self.ws.send_close()
            self._send()
        self._lost(None)

    def _lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        for future in (self.opened, self.acked):
            if not future.done():
                future.set_exception(exc or ConnectionError("connection closed"))
                future.exception()  # whoever awaits it still gets the error; nobody else must


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
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ws = None
                try:
                    sock.bind((local_ip, 0))
                    await asyncio.wait_for(loop.sock_connect(sock, (uri.host, uri.port)), 60)
                    ws = Socket(sock, url, headers, recorder)
                    ws.start()
                    await asyncio.wait_for(ws.opened, 60)
                    return ws
                except (OSError, TimeoutError, ConnectionError):
                    if ws is not None:
                        ws.close()
                    else:
                        sock.close()
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
                recorder.arrived, recorder.read = array("q"), array("q")
            recorder.recording = bool(arg)
            pipe.send(("recording", arg))
        elif command == "collect":
            pipe.send(("samples", (recorder.arrived.tobytes(), recorder.read.tobytes())))
            if pauses:
                print(f"client {local_ip}: {len(pauses)} collections, longest {max(pauses):.1f} ms CPU", flush=True)
        elif command == "lost":  # sockets closed by the server or the network (the soak's errors)
            pipe.send(("lost", sum(1 for sock in sockets if sock.closed)))
        elif command == "close":
            for sock in sockets:
                sock.close()
            pipe.send(("closed", len(sockets)))
            return


def client_process(pipe: Connection, url: str, token: str, first_index: int, count: int, local_ip: str) -> None:
    """Entry point of one client process."""
    uvloop.run(_serve(pipe, url, token, first_index, count, local_ip))
