"""The live publisher's lean path: PUBLISH written at once, in order, never raising or waiting on
Redis; failures and overflow counted (real Redis)."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from testkit import fresh_namespace

from tsmesh_common import leanredis
from tsmesh_common.leanredis import LeanRedis, command
from tsmesh_ingest.live import LivePublisher

pytestmark = pytest.mark.integration

NS = fresh_namespace()
FAILURES = "tsmesh_ingest_live_publish_failures_total"


def failures() -> float:
    return REGISTRY.get_sample_value(FAILURES) or 0.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def listening(redis_client: Any) -> AsyncIterator[tuple[str, Any, LivePublisher]]:
    """A fresh tenant, a subscription to its live channel and a lean publisher."""
    tenant = f"t-{uuid.uuid4().hex}"
    pubsub = redis_client.pubsub(ignore_subscribe_messages=True)
    await pubsub.subscribe(NS.live_channel(tenant))
    try:
        yield tenant, pubsub, LivePublisher(redis_client, NS, lean=LeanRedis.from_url("redis://127.0.0.1:6379/0"))
    finally:
        await pubsub.aclose()


async def test_batches_are_published_in_order_without_awaiting(listening: tuple[str, Any, LivePublisher]) -> None:
    tenant, pubsub, publisher = listening
    try:
        before = failures()
        publisher.publish(tenant, [b"one", b"two"])  # no connection yet: they wait for it
        await asyncio.sleep(0.05)
        publisher.publish(tenant, [b"three"])  # connected: written at once, no task
        assert publisher._lean is not None and publisher._lean._flusher is None
        assert publisher._lean.in_flight == 1
        got = []
        for _ in range(50):
            message = await pubsub.get_message(timeout=0.1)
            if message is not None:
                got.append(message["data"])
            if len(got) == 3:
                break
        assert got == [b"one", b"two", b"three"]
        assert failures() == before
    finally:
        await publisher.drain()


async def test_drain_waits_for_what_was_just_published(listening: tuple[str, Any, LivePublisher]) -> None:
    tenant, pubsub, publisher = listening
    publisher.publish(tenant, [b"last words"])
    await publisher.drain()  # shutdown: the reply came before the connection closed
    message = None
    for _ in range(20):
        message = message or await pubsub.get_message(timeout=0.1)
    assert message is not None and message["data"] == b"last words"


async def test_unreachable_redis_drops_and_counts_without_raising() -> None:
    publisher = LivePublisher(None, NS, lean=LeanRedis("127.0.0.1", free_port()))
    before = failures()
    publisher.publish("t1", [b"a", b"b"])
    publisher.publish("t1", [b"c"])  # within the retry pause: fails at once, no new attempt
    await publisher.drain(timeout=2)
    assert failures() == before + 3


async def test_more_than_max_pending_in_flight_is_dropped_and_counted() -> None:
    lean = LeanRedis("127.0.0.1", free_port())
    publisher = LivePublisher(None, NS, max_pending=2, lean=lean)
    before = failures()
    publisher.publish("t1", [b"a", b"b"])  # waiting for a connection: in flight
    publisher.publish("t1", [b"c"])  # over the bound: dropped at once
    assert failures() == before + 1
    await publisher.drain(timeout=2)
    assert failures() == before + 3


async def test_lean_send_leaks_no_socket_when_connection_setup_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leanredis, "RETRY_PAUSE_S", 0.0)  # a new attempt for every command
    wrong = LeanRedis("127.0.0.1", 6379, password=uuid.uuid4().hex)  # a wrong password: AUTH fails in set-up
    opened = len(os.listdir("/proc/self/fd"))
    results = []
    for _ in range(20):
        results.append(wrong.send(command(b"PING")))
        await asyncio.sleep(0.01)
    done = await asyncio.gather(*results, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in done), done
    assert len(os.listdir("/proc/self/fd")) <= opened + 1  # failed set-ups closed their sockets
    await wrong.aclose()


async def test_lean_send_answers_each_command_in_order(redis_client: Any) -> None:
    key = f"k-{uuid.uuid4().hex}"
    lean = LeanRedis.from_url("redis://127.0.0.1:6379/0")
    assert lean is not None
    try:
        replies = [lean.send(command(b"INCR", key.encode())) for _ in range(3)]
        assert lean.in_flight == 3
        assert await asyncio.gather(*replies) == [1, 2, 3]
        assert lean.in_flight == 0
        with pytest.raises(Exception, match="WRONGTYPE"):
            await lean.send(command(b"LPUSH", key.encode(), b"x"))
    finally:
        await lean.aclose()
        await redis_client.delete(key)
