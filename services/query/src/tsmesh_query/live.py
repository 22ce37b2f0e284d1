"""Live subscriptions: ONE Redis PSUBSCRIBE per process, fanned out by tenant, metric, then selector.

Subscriptions are indexed tenant -> metric -> equality label (name, value) -> selector, so a
published batch costs, per point, one lookup per label name the metric's selectors are indexed
by plus one match per selector actually found: 1,000 selectors ``host="..."`` on one metric cost
O(1) per point, not 1,000 matches. Selectors without an equality matcher are matched one by one.
Each matching selector's points go into its subscribers' bounded mailboxes; a stream sends
everything waiting as one response (one wake-up and one gRPC message per burst, see ADR 0327).
A subscriber with too many batches waiting is dropped (its stream ends with RESOURCE_EXHAUSTED):
memory stays bounded and fast subscribers are never held back. A subscriber that sent nothing for
a heartbeat period gets a heartbeat (:class:`HeartbeatWheel`); subscribers are spread over the
period's ticks, so heartbeats never leave as one burst (1,000 streams' heartbeats at once held live points
back by 15-30 ms). The feed reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping

from redis.asyncio import Redis
from tsmesh.v1 import common_pb2, query_pb2

from tsmesh_common.errors import ResourceExhausted, Unauthenticated
from tsmesh_common.leanredis import LeanRedis
from tsmesh_common.redis_keys import RedisNamespace
from tsmesh_query.config import SubscribeConfig
from tsmesh_query.metrics import LIVE_BATCHES, LIVE_DELAY, SUBSCRIBERS, SUBSCRIBERS_DROPPED
from tsmesh_query.selectors import Selector

EQUAL = common_pb2.MATCH_OP_EQUAL

log = logging.getLogger(__name__)

DROPPED = "dropped"
REVOKED = "revoked"
MERGE_MAX_POINTS = 4096  # points per coalesced response (the gRPC message limit is 8 MiB)
HEARTBEAT_TICK_S = 0.1
FEED_NAME = "tsmesh-query-live"  # the feed connection in CLIENT LIST


class Subscription:
    """One Subscribe stream: its selector and a bounded mailbox of point batches.

    Batches wait in a plain list; the stream takes everything waiting at once and sends it as ONE
    response (:meth:`take`), so a burst costs one wake-up and one gRPC message, not one per batch.
    More than ``size`` batches waiting drops the subscriber.
    """

    __slots__ = (
        "batches",
        "beat",
        "ended",
        "expires_at",
        "selector",
        "size",
        "slot",
        "tenant",
        "token_id",
        "waiter",
        "wheel",
    )

    def __init__(  # nosec B107 # token_id names a token, it holds no secret
        self, tenant: str, selector: Selector, size: int, token_id: str = "", expires_at: float | None = None
    ) -> None:
        self.tenant = tenant
        self.selector = selector
        self.size = size
        self.batches: list[query_pb2.SubscribeResponse] = []  # each holds points; shared by a group
        self.beat = False
        self.ended: str | None = None
        self.token_id = token_id
        self.expires_at = expires_at
        self.waiter: asyncio.Future[None] | None = None
        self.wheel: HeartbeatWheel | None = None  # set by the hub that opened it
        self.slot = 0  # the wheel's slot it waits in

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def end(self, reason: str) -> None:
        """Drop whatever waits: the stream ends with ``reason`` at its next read."""
        if self.ended is None:
            self.ended = reason
            self.batches.clear()
            self._wake()

    def offer(self, batch: query_pb2.SubscribeResponse) -> None:
        if self.ended is not None:
            return
        if len(self.batches) >= self.size:
            SUBSCRIBERS_DROPPED.inc()
            self.end(DROPPED)
            return
        self.batches.append(batch)
        self._wake()

    def heartbeat(self) -> None:
        if self.ended is None:
            self.beat = True
            self._wake()

    def ready(self) -> bool:
        return bool(self.batches) or self.beat or self.ended is not None

    async def wait(self) -> None:
        """Until something is ready (points, a heartbeat, or the end)."""
        if self.ready():
            return
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def take(self) -> list[query_pb2.SubscribeResponse]:
        """Everything waiting: the batches merged into as few responses as possible, then the
        heartbeat if one is due. A merged batch carries the earliest ``accepted_at_ns``; batches
        with and without series ids are never merged together."""
        out: list[query_pb2.SubscribeResponse] = []
        waiting, self.batches = self.batches, []
        if waiting and self.wheel is not None:
            self.wheel.sent(self)
        run: list[common_pb2.PointBatch] = []
        count = 0
        for response in waiting:
            batch = response.points
            if run and (count + len(batch.points) > MERGE_MAX_POINTS or _has_ids(batch) != _has_ids(run[0])):
                out.append(_response(run, waiting))
                run, count = [], 0
            run.append(batch)
            count += len(batch.points)
        if run:
            out.append(_response(run, waiting))
        if self.beat:
            self.beat = False
            out.append(query_pb2.SubscribeResponse(heartbeat=query_pb2.Heartbeat(server_time_ns=time.time_ns())))
        return out


class HeartbeatWheel:
    """Subscribers by the tick at which their heartbeat falls due: one heartbeat period is
    ``len(slots)`` ticks, and each tick gives a heartbeat to everyone in the next slot. New
    subscribers are dealt round the slots (opened together, they still beat apart); one that sends
    points moves to the slot just visited, a whole period away. So a stream is never quiet for more
    than a period (plus a tick), a busy one never gets a heartbeat, and no tick beats for more than
    its share of the idle ones."""

    __slots__ = ("_dealt", "slots", "turn")

    def __init__(self, slots: int) -> None:
        self.slots: list[set[Subscription]] = [set() for _ in range(slots)]
        self.turn = 0  # the slot the next tick visits
        self._dealt = 0

    def add(self, sub: Subscription) -> None:
        self._dealt += 1
        sub.wheel, sub.slot = self, self._dealt % len(self.slots)
        self.slots[sub.slot].add(sub)

    def remove(self, sub: Subscription) -> None:
        self.slots[sub.slot].discard(sub)

    def sent(self, sub: Subscription) -> None:
        """``sub`` just sent points: its heartbeat falls due a full period from now."""
        behind = self.turn - 1 if self.turn else len(self.slots) - 1
        if sub.slot != behind:
            self.slots[sub.slot].discard(sub)
            sub.slot = behind
            self.slots[behind].add(sub)

    def tick(self) -> None:
        for sub in self.slots[self.turn]:
            sub.heartbeat()
        self.turn = (self.turn + 1) % len(self.slots)


def _response(
    run: list[common_pb2.PointBatch], waiting: list[query_pb2.SubscribeResponse]
) -> query_pb2.SubscribeResponse:
    """The one response for ``run``: the shared response itself when nothing was merged."""
    if len(waiting) == 1:
        return waiting[0]
    return query_pb2.SubscribeResponse(points=merge(run))


def _has_ids(batch: common_pb2.PointBatch) -> bool:
    return len(batch.series_ids) == len(batch.points)


def merge(batches: list[common_pb2.PointBatch]) -> common_pb2.PointBatch:
    """One batch holding the points (and series ids) of ``batches``, in order."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    accepted = [b.accepted_at_ns for b in batches if b.accepted_at_ns]
    out = common_pb2.PointBatch(tenant_id=first.tenant_id, accepted_at_ns=min(accepted, default=0))
    ids = _has_ids(first)
    for batch in batches:
        out.points.extend(batch.points)
        if ids:
            out.series_ids.extend(batch.series_ids)
    return out


def select_points(batch: common_pb2.PointBatch, keep: list[int]) -> common_pb2.PointBatch:
    """The points of ``batch`` at indexes ``keep`` (with their series ids)."""
    if len(keep) == len(batch.points):
        return batch
    out = common_pb2.PointBatch(tenant_id=batch.tenant_id, accepted_at_ns=batch.accepted_at_ns)
    out.points.extend(batch.points[i] for i in keep)
    if len(batch.series_ids) == len(batch.points):
        out.series_ids.extend(batch.series_ids[i] for i in keep)
    return out


class _SelectorGroup:
    """The subscribers sharing one selector: matched once per point, offered once per batch.
    ``slot`` is the equality matcher (name, value) it is indexed under, if any; ``rest`` the
    matchers still to check for a point found through that slot."""

    __slots__ = ("rest", "selector", "slot", "subs")

    def __init__(self, selector: Selector, slot: tuple[str, str] | None) -> None:
        self.selector = selector
        self.slot = slot
        self.rest = tuple(
            m for m in selector.matchers if slot is None or (m.name, m.op, m.value) != (*slot[:1], EQUAL, slot[1])
        )
        self.subs: set[Subscription] = set()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(m.matches(labels) for m in self.rest)


class _MetricIndex:
    """The selector groups of one (tenant, metric). A group with an equality matcher (non-empty
    value) is found through ``by_label[name][value]``, so a point costs one dict lookup per
    indexed label name instead of one match per selector; the others are in ``scan``."""

    __slots__ = ("by_label", "groups", "scan")

    def __init__(self) -> None:
        self.groups: dict[str, _SelectorGroup] = {}
        self.by_label: dict[str, dict[str, set[_SelectorGroup]]] = {}
        self.scan: set[_SelectorGroup] = set()

    def add(self, selector: Selector) -> _SelectorGroup:
        group = self.groups.get(selector.fingerprint)
        if group is not None:
            return group
        equal = sorted((m.name, m.value) for m in selector.matchers if m.op == EQUAL and m.value)
        # prefer a label name already indexed: the fewer names, the fewer lookups per point
        slot = next((e for e in equal if e[0] in self.by_label), equal[0] if equal else None)
        group = self.groups[selector.fingerprint] = _SelectorGroup(selector, slot)
        if slot is None:
            self.scan.add(group)
        else:
            self.by_label.setdefault(slot[0], {}).setdefault(slot[1], set()).add(group)
        return group

    def remove(self, group: _SelectorGroup) -> None:
        del self.groups[group.selector.fingerprint]
        if group.slot is None:
            self.scan.discard(group)
            return
        name, value = group.slot
        by_value = self.by_label[name]
        same = by_value[value]
        same.discard(group)
        if not same:
            del by_value[value]
            if not by_value:
                del self.by_label[name]

    def matching(self, labels: Mapping[str, str]) -> list[_SelectorGroup]:
        found = [g for g in self.scan if g.matches(labels)]
        for name, by_value in self.by_label.items():
            groups = by_value.get(labels.get(name, ""))
            if groups:
                found.extend(g for g in groups if g.matches(labels))
        return found


class LiveHub:
    """The process-wide live feed and its subscribers."""

    def __init__(
        self, redis: Redis, cfg: SubscribeConfig, namespace: RedisNamespace, lean: LeanRedis | None = None
    ) -> None:
        self._redis = redis
        self._lean = lean
        self.live_pattern = namespace.live_pattern
        self._tenant_of = namespace.tenant_of_live_channel
        self._cfg = cfg
        self._index: dict[str, dict[str, _MetricIndex]] = {}
        self._subs: set[Subscription] = set()
        self._groups: dict[Subscription, _SelectorGroup] = {}
        self.wheel = HeartbeatWheel(max(1, round(cfg.heartbeat_s / HEARTBEAT_TICK_S)))
        self._per_tenant: dict[str, int] = {}
        self.connected = asyncio.Event()

    def open(  # nosec B107 # token_id names a token, it holds no secret
        self, tenant: str, selector: Selector, token_id: str = "", expires_at: float | None = None
    ) -> Subscription:
        if len(self._subs) >= self._cfg.max_subscribers:
            raise ResourceExhausted(
                "max_subscribers", "too many live subscriptions on this server", retry_after_seconds=5
            )
        if self._per_tenant.get(tenant, 0) >= self._cfg.max_subscribers_per_tenant:
            raise ResourceExhausted(
                "max_subscribers_per_tenant", "too many live subscriptions for this tenant", retry_after_seconds=5
            )
        sub = Subscription(tenant, selector, self._cfg.queue_size, token_id, expires_at)
        self._per_tenant[tenant] = self._per_tenant.get(tenant, 0) + 1
        index = self._index.setdefault(tenant, {}).get(selector.metric)
        if index is None:
            index = self._index[tenant][selector.metric] = _MetricIndex()
        group = index.add(selector)
        group.subs.add(sub)
        self._groups[sub] = group
        self._subs.add(sub)
        self.wheel.add(sub)
        SUBSCRIBERS.set(len(self._subs))
        return sub

    def close(self, sub: Subscription) -> None:
        group = self._groups.pop(sub, None)
        if group is None:
            return
        self._subs.discard(sub)
        self.wheel.remove(sub)
        left = self._per_tenant[sub.tenant] - 1
        if left:
            self._per_tenant[sub.tenant] = left
        else:
            del self._per_tenant[sub.tenant]
        group.subs.discard(sub)
        if not group.subs:
            by_metric = self._index[sub.tenant]
            index = by_metric[sub.selector.metric]
            index.remove(group)
            if not index.groups:
                del by_metric[sub.selector.metric]
                if not by_metric:
                    del self._index[sub.tenant]
        SUBSCRIBERS.set(len(self._subs))

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    async def stream(
        self, tenant: str, selector: Selector, token_id: str = "", expires_at: float | None = None
    ) -> AsyncIterator[query_pb2.SubscribeResponse]:
        """Responses for one Subscribe call until the client goes away or falls behind, or its
        token expires or is revoked (a live stream never outlives the credential that opened it)."""
        sub = self.open(tenant, selector, token_id, expires_at)
        try:
            yield query_pb2.SubscribeResponse(heartbeat=query_pb2.Heartbeat(server_time_ns=time.time_ns()))
            while True:
                if expires_at is None:
                    await sub.wait()
                else:
                    try:
                        async with asyncio.timeout(max(0.0, expires_at - time.time())):
                            await sub.wait()
                    except TimeoutError:
                        raise Unauthenticated("token expired") from None
                    if time.time() >= expires_at:
                        raise Unauthenticated("token expired")
                if sub.ended == DROPPED:
                    raise ResourceExhausted("subscriber_queue", "subscriber too slow; reconnect and catch up")
                if sub.ended == REVOKED:
                    raise Unauthenticated("token revoked")
                for response in sub.take():
                    yield response
        finally:
            self.close(sub)

    def revoke(self, token_id: str) -> None:
        """End every stream opened with ``token_id`` (an authenticator revocation callback)."""
        for sub in tuple(self._subs):
            if sub.token_id == token_id:
                sub.end(REVOKED)

    def dispatch(self, channel: str, data: bytes) -> None:
        """Fan one published PointBatch out to the channel tenant's matching subscribers."""
        by_metric = self._index.get(self._tenant_of(channel))
        if not by_metric:
            return
        batch = common_pb2.PointBatch.FromString(data)
        LIVE_BATCHES.inc()
        if batch.accepted_at_ns:
            LIVE_DELAY.observe(max(0.0, (time.time_ns() - batch.accepted_at_ns) / 1e9))
        matched: dict[_SelectorGroup, list[int]] = {}
        for i, point in enumerate(batch.points):
            index = by_metric.get(point.metric)
            if index is None:
                continue
            for group in index.matching(point.labels):
                keep = matched.get(group)
                if keep is None:
                    matched[group] = [i]
                else:
                    keep.append(i)
        for group, keep in matched.items():
            response = query_pb2.SubscribeResponse(points=select_points(batch, keep))
            for sub in group.subs:
                sub.offer(response)

    async def follow(self) -> None:
        """Consume the shared feed until cancelled; resubscribes after any Redis failure."""
        while True:
            try:
                if self._lean is None:
                    await self._follow_pubsub()
                else:
                    await self._follow_lean(self._lean)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any feed failure: back off and resubscribe
                log.warning("live feed interrupted, resubscribing", extra={"error": type(exc).__name__})
            self.connected.clear()
            await asyncio.sleep(0.5)

    async def _follow_lean(self, lean: LeanRedis) -> None:
        """The feed on a lean connection (plain TCP, parsed by hiredis): every message is dispatched
        from the socket's read callback, with no task wake-up and no redis-py machinery per message."""
        subscription = await lean.psubscribe(self.live_pattern, self._on_message, _nothing, client_name=FEED_NAME)
        try:
            self.connected.set()
            await subscription.lost
            raise ConnectionError("redis closed the live connection")
        finally:
            subscription.close()

    def _on_message(self, channel: bytes, data: bytes) -> None:
        try:
            self.dispatch(channel.decode(), data)
        except Exception as exc:  # noqa: BLE001 - one bad batch must not end the feed
            log.warning("live batch dropped", extra={"error": type(exc).__name__})

    async def _follow_pubsub(self) -> None:
        """The feed through redis-py (TLS or unix-socket URLs)."""
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(self.live_pattern)
            self.connected.set()
            while True:
                # the raw reply (no per-message dict): [b"pmessage", pattern, channel, data]
                reply = await pubsub.parse_response(block=True)
                if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
                    self._on_message(reply[2], reply[3])
        finally:
            try:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
            except Exception:  # noqa: BLE001 - the connection may already be gone
                log.debug("pubsub close failed")

    async def heartbeats(self) -> None:
        """Turn the heartbeat wheel one slot per tick."""
        tick = self._cfg.heartbeat_s / len(self.wheel.slots)
        while True:
            await asyncio.sleep(tick)
            self.wheel.tick()


def _nothing() -> None:
    return
