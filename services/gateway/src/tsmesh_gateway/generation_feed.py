"""Tenants' data generations followed from Redis pub/sub, so the micro-cache's hit path reads no Redis.

Every value a generation key takes is announced on the namespace's generation channel by the script
that sets it (``bump_generation_lua``, ``init_generations_lua``; ``tsmesh_common.redis_keys``). While this feed's
subscription is up, it keeps the current generation of each tenant it has been asked about:

- the first value of a tenant comes from a normal read (:class:`~tsmesh_gateway.microcache.GenerationReader`)
  sent after the subscription was confirmed (:meth:`track` before the read, :meth:`learn` after it),
  so every later bump reaches this worker as a message; a message that overtakes the read's reply
  is kept, because values only grow and the larger one wins;
- after that, a request takes the tenant's generation from :meth:`current`, synchronously.

The subscription failing in any way (closed, Redis restarted, no pong within ``ping_timeout``) empties
the copy at once and every read goes back to Redis until a new subscription is up, so a bump missed
while the feed was down is never hidden. A bump reaches this copy one pub/sub delivery after the
writer's script ran (sub-millisecond on a healthy host), where the read it replaces followed the
request's arrival: an answer cached before a commit can be served for that long after it (ADR 0406).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from prometheus_client import Counter, Gauge

from tsmesh_common.redis_keys import RedisNamespace

log = logging.getLogger(__name__)

FEED_UP = Gauge("tsmesh_gateway_generation_feed_up", "1 while the generation feed's subscription is up")
FEED_RESETS = Counter(
    "tsmesh_gateway_generation_feed_resets_total", "Generation feed subscriptions lost (the local copy emptied)"
)

FEED_NAME = "tsmesh-gateway-generation-feed"  # the subscription's name in Redis's CLIENT LIST
STABLE_SECONDS = 5.0  # a subscription lost sooner than this is retried with backoff


def _error(exc: BaseException) -> dict[str, str]:
    """What to log of a failure: its type and Redis's own words (e.g. an ACL refusing the channel)."""
    return {"error": type(exc).__name__, "detail": str(exc)[:200]}


class Subscription(Protocol):
    lost: asyncio.Future[None]

    async def ping(self) -> None: ...

    def close(self) -> None: ...


Subscribe = Callable[[str, Callable[[bytes], None], Callable[[], None]], Awaitable[Subscription]]


class GenerationFeed:
    """The local copy of tenants' data generations; :meth:`run` keeps its subscription up."""

    def __init__(
        self,
        subscribe: Subscribe,
        namespace: RedisNamespace,
        *,
        ping_seconds: float = 1.0,
        ping_timeout: float = 2.0,
        max_tenants: int = 100_000,
    ) -> None:
        self._subscribe = subscribe
        self._channel = namespace.generation_channel
        self._prefix = namespace.data_generation_key("").encode()[:-1]  # b"<namespace>:gen:{"
        self._ping_seconds = ping_seconds
        self._ping_timeout = ping_timeout
        self._max_tenants = max_tenants
        self._values: dict[str, int] = {}  # emptied in place, never replaced: :attr:`current` is its get
        # the tenant's generation, or None when it must be read from Redis (a C call on the hit path)
        self.current: Callable[[str], int | None] = self._values.get
        self._tracked: set[str] = set()
        self._epoch = 0  # odd while a subscription is up
        self._version = 0  # moves whenever the copy is emptied: a read from before is not kept

    @property
    def up(self) -> bool:
        return self._epoch % 2 == 1

    def track(self, tenant_id: str) -> int:
        """Call before sending a read of the tenant's generation; pass the result to :meth:`learn`
        (-1 while no subscription is up)."""
        if self._epoch % 2 == 0:
            return -1
        if tenant_id not in self._tracked and len(self._tracked) >= self._max_tenants:
            self._empty()
        self._tracked.add(tenant_id)
        return self._version

    def learn(self, tenant_id: str, value: int, token: int) -> None:
        """Keep ``value``, read after :meth:`track` returned ``token``, if the copy has not been
        emptied since (a lost subscription may have missed a bump in between; a copy emptied because
        it was full has forgotten the announcements that followed the read)."""
        if token != self._version or token < 0 or tenant_id not in self._tracked:
            return
        known = self._values.get(tenant_id)
        if known is None or value > known:
            self._values[tenant_id] = value

    def _message(self, data: bytes) -> None:
        """``b"<value> <namespace>:gen:{<tenant>}"``; other keys (late generations) and tenants nobody
        asked about are ignored."""
        value, _, key = data.partition(b" ")
        prefix = self._prefix
        if not key.startswith(prefix) or not key.endswith(b"}"):
            return
        tenant = key[len(prefix) : -1].decode("utf-8", "replace")
        if tenant not in self._tracked:
            return
        try:
            number = int(value)
        except ValueError:
            log.warning("ignoring a malformed generation announcement")
            return
        known = self._values.get(tenant)
        if known is None or number > known:
            self._values[tenant] = number

    def _end(self, epoch: int) -> None:
        """The subscription of ``epoch`` is gone (called by its connection and by :meth:`run`, in
        either order; a late call for an older subscription changes nothing)."""
        if self._epoch != epoch:
            return
        self._epoch += 1
        FEED_RESETS.inc()
        FEED_UP.set(0)
        self._empty()

    def _empty(self) -> None:
        self._version += 1
        self._values.clear()
        self._tracked.clear()

    async def run(self) -> None:
        """Subscribe, then ping every ``ping_seconds``; resubscribe with backoff after any failure.
        Only cancellation ends it."""
        delay = 0.25
        while True:
            epoch = self._epoch + 1
            try:
                subscription = await self._subscribe(self._channel, self._message, functools.partial(self._end, epoch))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis unreachable: reads go to Redis meanwhile
                log.warning("generation feed cannot subscribe", extra=_error(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._empty()
            self._epoch = epoch
            FEED_UP.set(1)
            began = time.monotonic()
            try:
                await self._watch(subscription)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a lost or silent connection: start again
                log.warning("generation feed lost, resubscribing", extra=_error(exc))
            finally:
                self._end(epoch)
                subscription.close()
            if time.monotonic() - began < STABLE_SECONDS:  # lost at once again: back off
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            else:
                delay = 0.25

    async def _watch(self, subscription: Subscription) -> None:
        # asyncio.timeout and asyncio.wait, not wait_for: on 3.11 wait_for can swallow a cancellation
        # that lands as its inner call completes, and the feed would never stop
        while not subscription.lost.done():
            async with asyncio.timeout(self._ping_timeout):
                await subscription.ping()
            await asyncio.wait({subscription.lost}, timeout=self._ping_seconds)
