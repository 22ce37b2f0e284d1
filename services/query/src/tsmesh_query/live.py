"""Live subscriptions: ONE Redis PSUBSCRIBE per process, fanned out by tenant, metric, then selector.

Subscriptions are indexed tenant -> metric -> selector fingerprint, so a published batch costs one
index lookup per point plus one label match per distinct selector of that point's metric: never a
pass over every subscriber. Each matching selector's points are put straight into its
subscribers' bounded queues. A subscriber whose queue is full is dropped (its stream ends with
RESOURCE_EXHAUSTED): memory stays bounded and fast subscribers are never held back.
A ticker puts a heartbeat into every queue every few seconds. The feed reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from tsmesh.v1 import common_pb2, query_pb2

from tsmesh_common.errors import ResourceExhausted, Unauthenticated
from tsmesh_common.redis_keys import LIVE_PATTERN, tenant_of_live_channel
from tsmesh_query.config import SubscribeConfig
from tsmesh_query.metrics import LIVE_BATCHES, LIVE_DELAY, SUBSCRIBERS, SUBSCRIBERS_DROPPED
from tsmesh_query.selectors import Selector

log = logging.getLogger(__name__)

_DROPPED = query_pb2.SubscribeResponse()
_REVOKED = query_pb2.SubscribeResponse()


class Subscription:
    """One Subscribe stream: its selector and bounded queue of responses."""

    __slots__ = ("dropped", "expires_at", "queue", "selector", "tenant", "token_id")

    def __init__(
        self, tenant: str, selector: Selector, size: int, token_id: str = "", expires_at: float | None = None
    ) -> None:
        self.tenant = tenant
        self.selector = selector
        self.queue: asyncio.Queue[query_pb2.SubscribeResponse] = asyncio.Queue(size)
        self.dropped = False
        self.token_id = token_id
        self.expires_at = expires_at

    def end(self, sentinel: query_pb2.SubscribeResponse) -> None:
        """Replace whatever is queued by ``sentinel``: the stream ends at its next read."""
        self.dropped = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(sentinel)

    def offer(self, response: query_pb2.SubscribeResponse) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(response)
        except asyncio.QueueFull:
            SUBSCRIBERS_DROPPED.inc()
            self.end(_DROPPED)


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
    """The subscribers sharing one selector: matched once per point, offered once per batch."""

    __slots__ = ("selector", "subs")

    def __init__(self, selector: Selector) -> None:
        self.selector = selector
        self.subs: set[Subscription] = set()


class LiveHub:
    """The process-wide live feed and its subscribers."""

    def __init__(self, redis: Redis, cfg: SubscribeConfig) -> None:
        self._redis = redis
        self._cfg = cfg
        self._index: dict[str, dict[str, dict[str, _SelectorGroup]]] = {}
        self._subs: set[Subscription] = set()
        self._per_tenant: dict[str, int] = {}
        self.connected = asyncio.Event()

    def open(
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
        by_metric = self._index.setdefault(tenant, {}).setdefault(selector.metric, {})
        group = by_metric.get(selector.fingerprint)
        if group is None:
            group = by_metric[selector.fingerprint] = _SelectorGroup(selector)
        group.subs.add(sub)
        self._subs.add(sub)
        SUBSCRIBERS.set(len(self._subs))
        return sub

    def close(self, sub: Subscription) -> None:
        if sub not in self._subs:
            return
        self._subs.discard(sub)
        left = self._per_tenant[sub.tenant] - 1
        if left:
            self._per_tenant[sub.tenant] = left
        else:
            del self._per_tenant[sub.tenant]
        by_metric = self._index[sub.tenant]
        groups = by_metric[sub.selector.metric]
        group = groups[sub.selector.fingerprint]
        group.subs.discard(sub)
        if not group.subs:
            del groups[sub.selector.fingerprint]
            if not groups:
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
                    response = await sub.queue.get()
                else:
                    try:
                        async with asyncio.timeout(max(0.0, expires_at - time.time())):
                            response = await sub.queue.get()
                    except TimeoutError:
                        raise Unauthenticated("token expired") from None
                if response is _DROPPED:
                    raise ResourceExhausted("subscriber_queue", "subscriber too slow; reconnect and catch up")
                if response is _REVOKED:
                    raise Unauthenticated("token revoked")
                yield response
        finally:
            self.close(sub)

    def revoke(self, token_id: str) -> None:
        """End every stream opened with ``token_id`` (an authenticator revocation callback)."""
        for sub in tuple(self._subs):
            if sub.token_id == token_id:
                sub.end(_REVOKED)

    def dispatch(self, channel: str, data: bytes) -> None:
        """Fan one published PointBatch out to the channel tenant's matching subscribers."""
        by_metric = self._index.get(tenant_of_live_channel(channel))
        if not by_metric:
            return
        batch = common_pb2.PointBatch.FromString(data)
        LIVE_BATCHES.inc()
        if batch.accepted_at_ns:
            LIVE_DELAY.observe(max(0.0, (time.time_ns() - batch.accepted_at_ns) / 1e9))
        matched: dict[_SelectorGroup, list[int]] = {}
        for i, point in enumerate(batch.points):
            groups = by_metric.get(point.metric)
            if not groups:
                continue
            labels = point.labels
            for group in groups.values():
                if group.selector.matches(labels):
                    keep = matched.get(group)
                    if keep is None:
                        matched[group] = [i]
                    else:
                        keep.append(i)
        for group, keep in matched.items():
            response = query_pb2.SubscribeResponse(points=select_points(batch, keep))
            for sub in tuple(group.subs):
                sub.offer(response)

    async def follow(self) -> None:
        """Consume the shared feed until cancelled; resubscribes after any Redis failure."""
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.psubscribe(LIVE_PATTERN)
                self.connected.set()
                while True:
                    # the raw reply (no per-message dict): [b"pmessage", pattern, channel, data]
                    reply = await pubsub.parse_response(block=True)
                    if not isinstance(reply, list) or len(reply) != 4 or reply[0] != b"pmessage":
                        continue
                    channel = reply[2]
                    self.dispatch(channel.decode() if isinstance(channel, bytes) else channel, reply[3])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any feed failure: back off and resubscribe
                log.warning("live feed interrupted, resubscribing", extra={"error": type(exc).__name__})
                self.connected.clear()
                await asyncio.sleep(0.5)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception:  # noqa: BLE001 - the connection may already be gone
                    log.debug("pubsub close failed")

    async def heartbeats(self) -> None:
        """Put a heartbeat into every subscriber's queue every ``heartbeat_s`` seconds."""
        while True:
            await asyncio.sleep(self._cfg.heartbeat_s)
            beat = query_pb2.SubscribeResponse(heartbeat=query_pb2.Heartbeat(server_time_ns=time.time_ns()))
            for sub in tuple(self._subs):
                if not sub.queue.full():
                    sub.offer(beat)
