"""Client side of the gateway WebSocket benchmark, run in several processes (open files are capped
at 20,000 per process): each process holds a share of the sockets, subscribes them, and records
``(point timestamp, receive time)`` pairs for every delivered point (``tsmesh.proto.v1`` frames).

Commands arrive on a pipe: ``connect``, ``subscribe``, ``record``, ``collect``, ``close``.
"""

from __future__ import annotations

import asyncio
import gc
import time
from array import array
from multiprocessing.connection import Connection
from typing import Any

import uvloop
import websockets
from tsmesh.v1 import stream_pb2


class Socket:
    """One subscriber socket that records what it receives."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.task: asyncio.Task[None] | None = None

    async def pump(self, store: list[array[int]], recording: list[bool]) -> None:
        message = stream_pb2.StreamServerMessage()
        try:
            async for frame in self.ws:
                now = time.time_ns()
                if not recording[0]:
                    continue
                message.ParseFromString(frame)
                if message.WhichOneof("message") == "points":
                    for point in message.points.points:
                        store[0].append(point.timestamp_ns)
                        store[0].append(now)
        except websockets.ConnectionClosed:
            return


async def _connect(url: str, token: str, count: int, local_ip: str, concurrency: int = 200) -> list[Socket]:
    gate = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {token}"}

    async def one() -> Socket:
        async with gate:
            for attempt in range(5):
                try:
                    ws = await websockets.connect(
                        url,
                        subprotocols=["tsmesh.proto.v1"],  # type: ignore[list-item]
                        additional_headers=headers,
                        compression=None,
                        open_timeout=60,
                        ping_interval=None,
                        max_queue=64,
                        local_addr=(local_ip, 0),
                    )
                    return Socket(ws)
                except (OSError, websockets.InvalidHandshake, TimeoutError):
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
    store: list[array[int]] = [array("q")]  # swapped (never the pump tasks) when a recording starts
    recording = [False]
    while True:
        command, arg = await loop.run_in_executor(None, pipe.recv)
        if command == "connect":
            started = time.monotonic()
            sockets = await _connect(url, token, count, local_ip)
            pipe.send(("connected", time.monotonic() - started))
        elif command == "subscribe":
            group = int(arg)
            for offset, sock in enumerate(sockets):
                index = first_index + offset
                sub = stream_pb2.StreamClientMessage(
                    subscribe={"id": "s", "selector": {"metric": f"bench_ws_{index // group}"}}
                )
                await sock.ws.send(sub.SerializeToString())
            acks = 0
            for sock in sockets:
                while True:
                    reply = stream_pb2.StreamServerMessage.FromString(await sock.ws.recv())
                    if reply.WhichOneof("message") == "ack":
                        acks += 1
                        break
            for sock in sockets:
                sock.task = asyncio.create_task(sock.pump(store, recording))
            pipe.send(("subscribed", acks))
        elif command == "record":
            if arg:
                pauses.clear()
                store[0] = array("q")
            recording[0] = bool(arg)
            pipe.send(("recording", arg))
        elif command == "collect":
            pipe.send(("samples", store[0].tobytes()))
            if pauses:
                print(f"client {local_ip}: {len(pauses)} collections, longest {max(pauses):.1f} ms CPU", flush=True)
        elif command == "close":
            for sock in sockets:
                if sock.task is not None:
                    sock.task.cancel()
            await asyncio.gather(*(s.ws.close() for s in sockets), return_exceptions=True)
            pipe.send(("closed", len(sockets)))
            return


def client_process(pipe: Connection, url: str, token: str, first_index: int, count: int, local_ip: str) -> None:
    """Entry point of one client process."""
    uvloop.run(_serve(pipe, url, token, first_index, count, local_ip))
