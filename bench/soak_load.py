"""HTTP load of the soak (``bench/soak.py``), one process per load: open-loop requests at a fixed rate
on keep-alive connections, each request's latency measured from the moment it was due (so a
stalled server shows in the figures instead of slowing the load down), errors counted.

Commands arrive on a pipe: ``start`` (run until ``stop``), ``window`` (reset the window's figures),
``collect`` (the window's figures), ``stop``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

import uvloop


@dataclass
class Window:
    """What happened since the window began: latencies (s), requests, units (points), errors."""

    began: float = field(default_factory=time.monotonic)
    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    units: int = 0
    errors: int = 0
    kinds: dict[str, int] = field(default_factory=dict)  # what failed: an HTTP status or an exception
    late: int = 0  # requests that found no free connection when due

    def failed(self, kind: str) -> None:
        self.errors += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1

    def figures(self) -> dict[str, float]:
        ordered = sorted(self.latencies)
        seconds = max(1e-9, time.monotonic() - self.began)

        def q(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")

        return {
            "seconds": seconds,
            "requests_per_s": self.requests / seconds,
            "units_per_s": self.units / seconds,
            "p50_ms": q(0.50),
            "p99_ms": q(0.99),
            "errors": self.errors,
            "kinds": dict(self.kinds),
            "late": self.late,
        }


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._waiter: asyncio.Future[int] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def request(self, data: bytes) -> asyncio.Future[int]:
        assert self.transport is not None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._waiter

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        length = 0
        for line in bytes(self._buffer[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self._buffer) < end + 4 + length:
            return
        status = int(self._buffer[9:12])
        del self._buffer[: end + 4 + length]
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(status)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc or ConnectionError("closed by the server"))


async def _run(
    pipe: Connection,
    port: int,
    rate: float,
    connections: int,
    make: Callable[[int], tuple[bytes, int]],
) -> None:
    loop = asyncio.get_running_loop()
    window = Window()
    stopping = asyncio.Event()

    async def commands() -> None:
        nonlocal window
        while True:
            command = await loop.run_in_executor(None, pipe.recv)
            if command == "window":
                window = Window()
                pipe.send("ok")
            elif command == "collect":
                pipe.send(window.figures())
            elif command == "stop":
                stopping.set()
                return

    async def connect() -> HttpConnection:
        _, conn = await loop.create_connection(HttpConnection, "127.0.0.1", port)
        return conn

    free: list[HttpConnection] = [await connect() for _ in range(connections)]
    waiting: asyncio.Queue[HttpConnection] = asyncio.Queue()

    async def one(conn: HttpConnection, data: bytes, units: int, due: float) -> None:
        target = window
        try:
            status = await asyncio.wait_for(conn.request(data), 30)
        except (OSError, TimeoutError, ConnectionError, RuntimeError) as exc:  # RuntimeError: a closed transport
            target.failed(type(exc).__name__)
            if stopping.is_set():
                return
            conn = await connect()
        else:
            target.latencies.append(time.monotonic() - due)
            target.requests += 1
            if 200 <= status < 300:
                target.units += units
            else:
                target.failed(f"HTTP {status}")
        if conn.lost and not stopping.is_set():
            conn = await connect()
        waiting.put_nowait(conn)

    control = asyncio.create_task(commands())
    interval = 1.0 / rate
    due = time.monotonic()
    n = 0
    tasks: set[asyncio.Task[None]] = set()
    while not stopping.is_set():
        due += interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while not waiting.empty():
            free.append(waiting.get_nowait())
        if not free:
            window.late += 1
            free.append(await waiting.get())
        data, units = make(n)
        n += 1
        task = asyncio.create_task(one(free.pop(), data, units, due))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks, return_exceptions=True)
    await control
    pipe.send(window.figures())


def _line_protocol_writes(token: str, points: int, series: int) -> Callable[[int], tuple[bytes, int]]:
    """``POST /api/v2/write`` bodies of ``points`` lines spread over ``series`` hosts, timestamped now."""
    head = f"POST /api/v2/write?bucket=soak HTTP/1.1\r\nHost: soak\r\nAuthorization: Token {token}\r\n"

    def make(n: int) -> tuple[bytes, int]:
        now = time.time_ns()
        start = n * points
        body = "".join(f"soak_bulk,host=h{(start + i) % series} v={i} {now + i}\n" for i in range(points)).encode()
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body, points

    return make


def _live_writes(token: str, points: int, selectors: int) -> Callable[[int], tuple[bytes, int]]:
    """``POST /v1/write`` JSON bodies for the WebSocket subscribers' metrics (``bench_ws_<k>``)."""
    head = (
        f"POST /v1/write HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n"
    )

    def make(n: int) -> tuple[bytes, int]:
        now = time.time_ns()
        items = ",".join(
            f'{{"metric":"bench_ws_{(n * points + i) % selectors}","labels":{{}},"timestamp_ns":{now + i},"value":{i}}}'
            for i in range(points)
        )
        body = f'{{"points":[{items}]}}'.encode()
        return (head + f"Content-Length: {len(body)}\r\n\r\n").encode() + body, points

    return make


def _cached_queries(token: str, query: str) -> Callable[[int], tuple[bytes, int]]:
    request = f"GET /v1/query/range?{query} HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    return lambda n: (request, 1)


def load_process(pipe: Connection, kind: str, port: int, token: str, rate: float, connections: int, arg: str) -> None:
    """Entry point: ``kind`` is ``bulk`` (points per request, series), ``live`` (points per request,
    selectors) or ``query`` (the query string); ``rate`` is requests per second."""
    if kind == "bulk":
        points, series = (int(x) for x in arg.split(","))
        make = _line_protocol_writes(token, points, series)
    elif kind == "live":
        points, selectors = (int(x) for x in arg.split(","))
        make = _live_writes(token, points, selectors)
    else:
        make = _cached_queries(token, arg)
    uvloop.run(_run(pipe, port, rate, connections, make))
