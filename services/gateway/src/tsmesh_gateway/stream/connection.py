"""One WebSocket of ``/v1/stream``: its subscriptions and its bounded, coalescing send queue.

All sends of a socket go through one writer task, created only while there is something to send
(an idle socket holds no task of its own). Points that arrive while a frame is being written join
the next frame, so coalescing never delays a point; once more than ``max_points`` wait, the socket
is a slow consumer and is closed with :data:`CLOSE_SLOW_CONSUMER`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import Counter

from tsmesh_common.context import Principal
from tsmesh_gateway.stream.codec import Codec, Fragments, Message, points_frame

log = logging.getLogger(__name__)

CLOSE_NORMAL = 1000
CLOSE_BAD_MESSAGE = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_IDLE = 4408
CLOSE_SLOW_CONSUMER = 4008
CLOSE_GOING_AWAY = 1001
CLOSE_TIMEOUT_SECONDS = 10.0
MAX_POINTS_PER_FRAME = 500

FRAMES = Counter("tsmesh_gateway_ws_frames_total", "WebSocket point frames sent")
POINTS = Counter("tsmesh_gateway_ws_points_total", "Points delivered over WebSocket")
CLOSED = Counter("tsmesh_gateway_ws_closed_total", "WebSockets closed by the gateway", ["reason"])
REFUSED = Counter("tsmesh_gateway_ws_refused_total", "WebSocket handshakes refused: the worker is full")

Send = Callable[[Message], Awaitable[None]]
SendNow = Callable[[Message], bool]


class Connection:
    """A live socket: who it belongs to, what it subscribed to, what it still has to send."""

    __slots__ = (
        "__weakref__",
        "_writer",
        "authorization",
        "close_code",
        "closed",
        "codec",
        "handler",
        "last_seen",
        "max_points",
        "outbox",
        "pending",
        "pending_points",
        "ping_due",
        "principal",
        "send",
        "send_now",
        "subscriptions",
        "wake_batched",
    )

    def __init__(self, send: Send, codec: Codec, max_points: int) -> None:
        self.send = send
        self.codec = codec
        self.max_points = max_points
        self.principal: Principal | None = None
        self.authorization = ""
        self.subscriptions: dict[str, Any] = {}
        self.outbox: deque[Message] = deque()
        self.pending: dict[str, list[Fragments]] = {}
        self.pending_points = 0
        self.closed = False
        self.close_code: tuple[int, str] | None = None
        self.last_seen = time.monotonic()
        self.ping_due = False
        self.handler: asyncio.Task[Any] | None = None
        self._writer: asyncio.Task[None] | None = None
        self.send_now: SendNow | None = None
        self.wake_batched: Callable[[Connection], None] | None = None

    def stopped(self) -> bool:
        return self.closed

    def push_points(self, sub_id: str, fragments: Fragments) -> None:
        """Queue a batch for a subscription; overflowing the bound closes the socket."""
        if self.closed:
            return
        self.pending_points += fragments.count
        if self.pending_points > self.max_points:
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer: send queue overflow", "slow_consumer")
            return
        queued = self.pending.get(sub_id)
        if queued is None:
            self.pending[sub_id] = [fragments]
        else:
            queued.append(fragments)
        if self._writer is not None:
            return
        if self.wake_batched is not None and self.send_now is not None:
            self.wake_batched(self)
        else:
            self._wake()

    def flush_now(self) -> tuple[int, int]:
        """Write what is pending without a task when the socket can take it right now (``send_now``);
        else leave it to the writer task. Returns (frames, points) written here."""
        if self.closed or self._writer is not None or not self.pending:
            return 0, 0
        send_now = self.send_now
        if send_now is None or self.outbox:
            self._wake()
            return 0, 0
        pending, self.pending = self.pending, {}
        frames = points = 0
        items = list(pending.items())
        for i, (sub_id, fragments) in enumerate(items):
            groups = _frames(fragments)
            for j, (frame, count) in enumerate(groups):
                if not send_now(points_frame(self.codec, sub_id, frame)):
                    rest = [f for group, _ in groups[j:] for f in group]
                    self.pending = {sub_id: rest, **dict(items[i + 1 :])}
                    self._wake()
                    return frames, points
                self.pending_points -= count
                frames += 1
                points += count
        return frames, points

    def push(self, message: Message) -> None:
        """Queue a control message (ack, error, ping, pong)."""
        if self.closed:
            return
        if len(self.outbox) > 1000:
            self.close(CLOSE_SLOW_CONSUMER, "slow consumer: send queue overflow", "slow_consumer")
            return
        self.outbox.append(message)
        self._wake()

    def _wake(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        try:
            while not self.closed:
                if self.outbox:
                    await self.send(self.outbox.popleft())
                    continue
                if not self.pending:
                    return
                pending, self.pending = self.pending, {}
                for sub_id, fragments in pending.items():
                    for frame, count in _frames(fragments):
                        if sub_id not in self.subscriptions:  # ended while earlier frames were written
                            self.pending_points -= count
                            continue
                        await self.send(points_frame(self.codec, sub_id, frame))
                        self.pending_points -= count
                        FRAMES.inc()
                        POINTS.inc(count)
                        if self.stopped():
                            return
        except Exception as exc:  # noqa: BLE001 - a failed send means the peer is gone
            log.debug("websocket send failed", extra={"error": type(exc).__name__})
            self.closed = True
            self.pending.clear()
        finally:
            self._writer = None

    def close(self, code: int, reason: str, metric: str) -> None:
        """Close with ``code`` from outside the socket's own task: stop queueing, drop what waits, and
        interrupt the socket's task, which then sends the close frame (:meth:`finish_close`).

        Granian does not deliver a close frame sent while another task is waiting in ``receive``
        after a blocked send, so the task that owns ``receive`` is the one that closes.
        """
        if not self.mark_closed(code, reason, metric):
            return
        handler = self.handler
        if handler is not None and handler is not asyncio.current_task() and not handler.done():
            handler.cancel()

    def mark_closed(self, code: int, reason: str, metric: str) -> bool:
        if self.closed:
            return False
        self.closed = True
        self.close_code = (code, reason)
        CLOSED.labels(metric).inc()
        self.pending.clear()
        self.outbox.clear()
        self.pending_points = 0
        return True

    async def finish_close(self) -> None:
        """Let the frame being written finish (bounded), then send the close frame."""
        assert self.close_code is not None
        code, reason = self.close_code
        writer = self._writer
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_SECONDS):
                if writer is not None:
                    await asyncio.wait([writer])
                await self.send({"type": "websocket.close", "code": code, "reason": reason})
        except Exception as exc:  # noqa: BLE001 - the peer may already be gone
            log.debug("websocket close failed", extra={"error": type(exc).__name__})
        finally:
            if writer is not None and not writer.done():
                writer.cancel()


def _frames(fragments: list[Fragments]) -> list[tuple[list[Fragments], int]]:
    """Group queued batches into frames of about :data:`MAX_POINTS_PER_FRAME` points."""
    frames: list[tuple[list[Fragments], int]] = []
    current: list[Fragments] = []
    count = 0
    for fragment in fragments:
        if current and count + fragment.count > MAX_POINTS_PER_FRAME:
            frames.append((current, count))
            current, count = [], 0
        current.append(fragment)
        count += fragment.count
    frames.append((current, count))
    return frames
