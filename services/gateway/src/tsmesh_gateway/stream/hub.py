"""The per-process fan-out: ONE upstream ``QueryService.Subscribe`` per (tenant, selector), shared
by every socket subscribed to it, plus the sweeper that pings idle sockets and closes dead,
expired or revoked ones, and re-checks every socket's token every ``reauth_seconds``.

A subscription query refuses (any code but UNAVAILABLE-like and auth codes, e.g. INVALID_ARGUMENT)
fails: its sockets get an error for that id and the feed is dropped, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Gauge
from tsmesh.v1 import common_pb2, query_pb2

from tsmesh_common.client import outgoing_metadata
from tsmesh_common.context import Principal
from tsmesh_common.errors import TsmeshError, Unauthenticated
from tsmesh_gateway.config import StreamConfig
from tsmesh_gateway.principal_cache import authorization_token
from tsmesh_gateway.stream.codec import Fragments
from tsmesh_gateway.stream.connection import (
    CLOSE_IDLE,
    CLOSE_UNAUTHENTICATED,
    FRAMES,
    POINTS,
    Connection,
)

log = logging.getLogger(__name__)

UPSTREAMS = Gauge("tsmesh_gateway_ws_upstream_subscriptions", "Upstream Subscribe streams open in this process")
SOCKETS = Gauge("tsmesh_gateway_ws_connections", "WebSockets open in this process")

CLOSE_INTERNAL = 1011
AUTH_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})
RETRY_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.OK}
)
REAUTH_BATCH = 64
SETTLE_SECONDS = 0.05  # a refusal's status may follow its (empty) initial metadata by a loop turn or two
FeedKey = tuple[str, bytes]
PARSE_TIMEOUT_S = 5.0


class UpstreamRefusal(TsmeshError):
    """An upstream call's status, passed on to the client as an error frame with the same code."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class Feed:
    """One upstream Subscribe and the (socket, subscription id) pairs it feeds."""

    def __init__(self, hub: Hub, key: FeedKey, selector: common_pb2.Selector) -> None:
        self.hub = hub
        self.key = key
        self.selector = selector
        self.members: dict[tuple[Connection, str], None] = {}
        self.ready = asyncio.Event()
        self._refused: set[str] = set()
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"feed-{key[0]}")

    def _authorization(self) -> str | None:
        for conn, _ in self.members:
            if not conn.closed and conn.authorization and conn.authorization not in self._refused:
                return conn.authorization
        return None

    async def _run(self) -> None:
        backoff = 0.1
        while self.members:
            authorization = self._authorization()
            if authorization is None:
                self._fail("UNAUTHENTICATED", "no subscriber's token is accepted upstream")
                return
            call = self.hub.stub.Subscribe(
                query_pb2.SubscribeRequest(selector=self.selector), metadata=outgoing_metadata(authorization)
            )
            ready_timer = asyncio.get_running_loop().call_later(1.0, self.ready.set)
            try:
                waiter = asyncio.ensure_future(call.initial_metadata())
                waiter.add_done_callback(lambda _f, c=call: self._started(c))
                async for response in call:
                    self.ready.set()
                    backoff = 0.1
                    if response.HasField("points") and response.points.points:
                        self._deliver(Fragments(response.points.points))
            except grpc.aio.AioRpcError as exc:
                if exc.code() in AUTH_CODES:
                    self._refused.add(authorization)
                    continue
                if exc.code() not in RETRY_CODES:
                    self._fail(exc.code().name, exc.details() or "subscription refused upstream")
                    return
                self.ready.set()
                log.info("upstream subscription interrupted", extra={"code": exc.code().name})
            finally:
                ready_timer.cancel()
                call.cancel()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)

    def _started(self, call: Any) -> None:
        """Initial metadata arrived: ready unless the call ends right away (refused: no ack, an error)."""
        if not call.done():
            asyncio.get_running_loop().call_later(SETTLE_SECONDS, lambda: None if call.done() else self.ready.set())

    def _deliver(self, fragments: Fragments) -> None:
        for conn, sub_id in self.members:
            conn.push_points(sub_id, fragments)

    def _fail(self, code: str, message: str) -> None:
        for conn, sub_id in list(self.members):
            conn.push(conn.codec.error(sub_id, code, message))
            conn.subscriptions.pop(sub_id, None)
        self.members.clear()
        self.ready.set()
        self.hub.drop_feed(self)


class Flusher:
    """One coalescing window per process: sockets that received points during this loop iteration
    are written once each, right after it (far below the 1 ms bound), without a task per socket."""

    def __init__(self) -> None:
        self._dirty: dict[Connection, None] = {}
        self._scheduled = False

    def mark(self, conn: Connection) -> None:
        self._dirty[conn] = None
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        dirty, self._dirty = self._dirty, {}
        self._scheduled = False
        frames = points = 0
        for conn in dirty:
            try:
                sent, count = conn.flush_now()
            except Exception as exc:  # noqa: BLE001 - one broken socket must not stop the others
                log.debug("websocket flush failed", extra={"error": type(exc).__name__})
                conn.close(CLOSE_INTERNAL, "send failed", "send_failed")
                continue
            frames += sent
            points += count
        if frames:
            FRAMES.inc(frames)
            POINTS.inc(points)


class HeapFreezer:
    """The worker's one garbage-collector policy: long-lived state kept out of the collector's way
    (ADR 0472 for the start-up freeze, ADR 0475 for sockets).

    :meth:`start` freezes everything built at start-up (``gc.freeze()`` moves every tracked object
    into the permanent generation, which collections skip): under HTTP load, full passes over it
    took a fifth of the event loop. At 10,000 sockets a worker holds ~1 M tracked objects more, and
    collections there took 18-57 ms of CPU (a full one 401 ms) on the thread that writes every
    frame, so once the open sockets have grown by a quarter since the last freeze (and number at
    least ``minimum``), :meth:`check` freezes again. Frozen garbage (the cycles of sockets closed
    later) is never collected while frozen, so once half as many sockets as were frozen have
    closed, ``gc.unfreeze()`` hands everything back; after the next full collection everything
    still alive (the start-up state included) is frozen again. Sockets that never outnumbered
    ``minimum`` were never frozen: their closes thaw nothing.
    """

    def __init__(
        self,
        minimum: int = 1000,
        freeze: Callable[[], None] = gc.freeze,
        unfreeze: Callable[[], None] = gc.unfreeze,
        full_collections: Callable[[], int] = lambda: int(gc.get_stats()[2]["collections"]),
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        self._minimum = minimum
        self._freeze = freeze
        self._unfreeze = unfreeze
        self._full_collections = full_collections
        self._collect = collect
        self._frozen_with = 0  # sockets open at the last freeze
        self._closed = 0  # sockets closed since then
        self._thawed_at: int | None = None  # full collections counted at the last unfreeze

    def start(self) -> None:
        """Collect, then freeze what start-up built (called once the worker is ready to serve)."""
        self._collect()
        self._freeze()

    def check(self, open_sockets: int) -> None:
        """Freeze again after a thaw once a full collection has run, or when the sockets have grown
        enough (called by the sweeper every second)."""
        if self._thawed_at is not None:
            if self._full_collections() == self._thawed_at:
                return
            self._thawed_at = None
            self._freeze()
            self._frozen_with, self._closed = open_sockets, 0
            return
        if open_sockets >= max(self._minimum, self._frozen_with + self._frozen_with // 4 + 1):
            self._freeze()
            self._frozen_with, self._closed = open_sockets, 0

    def closed(self) -> None:
        if not self._frozen_with:
            return
        self._closed += 1
        if 2 * self._closed >= self._frozen_with:
            self._unfreeze()
            self._frozen_with, self._closed = 0, 0
            self._thawed_at = self._full_collections()


class Hub:
    """All sockets and upstream feeds of this process."""

    def __init__(
        self,
        stub: Any,
        cfg: StreamConfig,
        clock: Callable[[], float] = time.time,
        *,
        authenticate: Callable[[str], Awaitable[Principal]] | None = None,
    ) -> None:
        self.stub = stub
        self.cfg = cfg
        self._clock = clock
        self._authenticate = authenticate
        self._verified: dict[Connection, float] = {}
        self._reauth: asyncio.Task[int] | None = None
        self.feeds: dict[FeedKey, Feed] = {}
        self.connections: set[Connection] = set()
        self.by_token: dict[str, set[Connection]] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.flusher = Flusher()
        self.heap = HeapFreezer()

    def start(self) -> None:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="ws-sweeper")

    async def stop(self) -> None:
        for task in (self._sweeper, self._reauth):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for feed in list(self.feeds.values()):
            feed.task.cancel()
        for conn in list(self.connections):
            conn.close(1001, "server shutting down", "shutdown")

    def register(self, conn: Connection) -> None:
        conn.wake_batched = self.flusher.mark
        self.connections.add(conn)
        SOCKETS.set(len(self.connections))

    def identify(self, conn: Connection, old_token_id: str | None) -> None:
        """Index ``conn`` under its (new) principal's token id for revocation."""
        if old_token_id is not None:
            self.by_token.get(old_token_id, set()).discard(conn)
        assert conn.principal is not None
        self.by_token.setdefault(conn.principal.token_id, set()).add(conn)
        self._verified[conn] = time.monotonic()

    def unregister(self, conn: Connection) -> None:
        if conn in self.connections:
            self.heap.closed()
        self.connections.discard(conn)
        self._verified.pop(conn, None)
        SOCKETS.set(len(self.connections))
        if conn.principal is not None:
            peers = self.by_token.get(conn.principal.token_id)
            if peers is not None:
                peers.discard(conn)
                if not peers:
                    del self.by_token[conn.principal.token_id]
        for sub_id in list(conn.subscriptions):
            self.unsubscribe(conn, sub_id)

    async def parse_promql(self, conn: Connection, text: str) -> common_pb2.Selector:
        """The structured selector of a PromQL series selector, parsed by query's PromQL parser
        (``ParseSelector``) so one parser decides; its refusal becomes the subscription's error."""
        try:
            answer = await self.stub.ParseSelector(
                query_pb2.ParseSelectorRequest(promql=text),
                timeout=PARSE_TIMEOUT_S,
                metadata=outgoing_metadata(conn.authorization),
            )
        except grpc.aio.AioRpcError as exc:
            raise UpstreamRefusal(exc.code(), exc.details() or exc.code().name.lower()) from None
        selector: common_pb2.Selector = answer.selector
        return selector

    async def subscribe(self, conn: Connection, sub_id: str, selector: common_pb2.Selector) -> bool:
        """Attach a subscription to the shared feed of its (tenant, selector), starting it if new.
        False when upstream refused it meanwhile (the socket already got the error)."""
        assert conn.principal is not None
        key = (conn.principal.tenant_id, selector.SerializeToString(deterministic=True))
        feed = self.feeds.get(key)
        if feed is None:
            feed = self.feeds[key] = Feed(self, key, selector)
            UPSTREAMS.set(len(self.feeds))
        feed.members[(conn, sub_id)] = None
        conn.subscriptions[sub_id] = feed
        if not feed.ready.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    await feed.ready.wait()
        return conn.subscriptions.get(sub_id) is feed

    def unsubscribe(self, conn: Connection, sub_id: str) -> bool:
        feed = conn.subscriptions.pop(sub_id, None)
        if feed is None:
            return False
        feed.members.pop((conn, sub_id), None)
        dropped = conn.pending.pop(sub_id, None)
        if dropped:
            conn.pending_points -= sum(fragments.count for fragments in dropped)
        if not feed.members:
            self.drop_feed(feed)
        return True

    def drop_feed(self, feed: Feed) -> None:
        if self.feeds.get(feed.key) is feed:
            del self.feeds[feed.key]
            UPSTREAMS.set(len(self.feeds))
        if not feed.task.done() and asyncio.current_task() is not feed.task:
            feed.task.cancel()

    def revoke(self, token_id: str) -> None:
        """A revocation event: close every socket authenticated by that token (code 4401)."""
        for conn in list(self.by_token.get(token_id, ())):
            conn.close(CLOSE_UNAUTHENTICATED, "token revoked", "revoked")

    async def _sweep(self) -> None:
        interval = min(1.0, self.cfg.ping_interval_seconds / 2)
        while True:
            await asyncio.sleep(interval)
            self.sweep_once()
            self.heap.check(len(self.connections))
            if self._authenticate is not None and (self._reauth is None or self._reauth.done()):
                self._reauth = asyncio.get_running_loop().create_task(self.reauthenticate_due(), name="ws-reauth")

    def sweep_once(self) -> None:
        """Ping quiet sockets, close idle ones and those whose token has expired."""
        now, wall = time.monotonic(), self._clock()
        ping_after, idle_after = self.cfg.ping_interval_seconds, self.cfg.idle_timeout_seconds
        for conn in list(self.connections):
            if conn.closed:
                continue
            quiet = now - conn.last_seen
            principal = conn.principal
            if principal is not None and principal.expires_at is not None and principal.expires_at <= wall:
                conn.close(CLOSE_UNAUTHENTICATED, "token expired", "expired")
            elif quiet > idle_after:
                conn.close(CLOSE_IDLE, "idle timeout", "idle")
            elif quiet > ping_after and not conn.ping_due and principal is not None:
                conn.ping_due = True
                conn.push(conn.codec.ping(time.time_ns()))

    async def reauthenticate_due(self) -> int:
        """Re-check, through the shared authenticator, the token of every socket verified more than
        ``reauth_seconds`` ago (each distinct token once); close with 4401 the sockets whose token no
        longer authenticates (a lost revocation message, the end of a rotation grace). While auth
        is unreachable sockets stay open and are re-checked a few seconds later. Returns how many
        sockets were closed."""
        if self._authenticate is None:
            return 0
        every = self.cfg.reauth_seconds
        now = time.monotonic()
        due: dict[str, list[Connection]] = {}
        for conn, verified in self._verified.items():
            if now - verified >= every and not conn.closed and conn.authorization:
                due.setdefault(conn.authorization, []).append(conn)
        closed = 0
        tokens = list(due.items())
        for start in range(0, len(tokens), REAUTH_BATCH):
            batch = tokens[start : start + REAUTH_BATCH]
            results = await asyncio.gather(
                *(self._check(authorization) for authorization, _ in batch), return_exceptions=True
            )
            checked = time.monotonic()
            for (authorization, conns), result in zip(batch, results, strict=True):
                current = [c for c in conns if c.authorization == authorization and c in self._verified]
                if isinstance(result, Unauthenticated):
                    for conn in current:
                        if not conn.closed:
                            conn.close(CLOSE_UNAUTHENTICATED, result.message, "reauth")
                            closed += 1
                elif isinstance(result, BaseException):
                    log.info("websocket re-authentication deferred", extra={"error": type(result).__name__})
                    for conn in current:
                        self._verified[conn] = checked - every + min(every, 5.0)
                else:
                    for conn in current:
                        self._verified[conn] = checked
        return closed

    async def _check(self, authorization: str) -> None:
        assert self._authenticate is not None
        await self._authenticate(authorization_token(authorization))
