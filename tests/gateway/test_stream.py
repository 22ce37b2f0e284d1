"""WebSocket /v1/stream on a real Granian gateway in front of fake upstreams: both subprotocols,
auth by header or first message, one shared upstream Subscribe, heartbeats, slow consumers,
revocation and expiry closing live sockets, and re-authentication re-checking subscriptions."""

from __future__ import annotations

import asyncio
import time
import urllib.request
import uuid

import orjson
import pytest
import websockets
from testkit import eventually
from tsmesh.v1 import common_pb2, stream_pb2

from tsmesh_common.redis_keys import REVOCATION_CHANNEL
from tsmesh_gateway.stream.hub import HeapFreezer

JSON = "tsmesh.json.v1"
PROTO = "tsmesh.proto.v1"


def urlopen_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def _points(metric: str, n: int, label: str = "a") -> list[common_pb2.Point]:
    return [
        common_pb2.Point(metric=metric, labels={"host": label}, timestamp_ns=i + 1, value=float(i)) for i in range(n)
    ]


async def _recv_json(ws: websockets.ClientConnection, kind: str) -> dict:
    while True:
        message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == kind:
            return message


async def _subscribers(served, tenant: str, metric: str, count: int) -> None:
    def ready() -> bool:
        return sum(1 for t, s, _ in served.mesh.query.subscribers if t == tenant and s.metric == metric) >= count

    await eventually(ready)


@pytest.mark.parametrize("listener", ["lean", "granian"])
async def test_json_subscribe_receives_points_and_one_upstream_is_shared(served, listener: str) -> None:
    url = served.ws_url if listener == "lean" else served.granian_ws_url
    tenant, metric = f"t-{uuid.uuid4().hex[:8]}", f"cpu_{uuid.uuid4().hex[:6]}"
    auth = {"Authorization": f"Bearer {served.mesh.mint.token(tenant, 'read')}"}
    before = served.mesh.query.calls.get("Subscribe", 0)
    sockets = [await websockets.connect(url, subprotocols=[JSON], additional_headers=auth) for _ in range(3)]
    try:
        for i, ws in enumerate(sockets):
            assert ws.subprotocol == JSON
            await ws.send(orjson.dumps({"type": "subscribe", "id": f"s{i}", "selector": {"metric": metric}}).decode())
            ack = await _recv_json(ws, "ack")
            assert ack == {"type": "ack", "id": f"s{i}", "op": "subscribe"}
        await _subscribers(served, tenant, metric, 1)
        assert served.mesh.query.calls["Subscribe"] == before + 1
        served.mesh.query.publish(tenant, _points(metric, 3))
        for i, ws in enumerate(sockets):
            got: list[dict] = []
            while len(got) < 3:
                frame = await _recv_json(ws, "points")
                assert frame["id"] == f"s{i}"
                got.extend(frame["points"])
            assert got == [
                {"metric": metric, "labels": {"host": "a"}, "timestamp_ns": n + 1, "value": float(n)} for n in range(3)
            ]
    finally:
        for ws in sockets:
            await ws.close()
    await eventually(lambda: not any(s.metric == metric for _, s, _ in served.mesh.query.subscribers))


async def test_proto_subprotocol_with_first_message_auth(served) -> None:
    tenant, metric = f"t-{uuid.uuid4().hex[:8]}", f"mem_{uuid.uuid4().hex[:6]}"
    async with websockets.connect(served.ws_url, subprotocols=[PROTO]) as ws:
        assert ws.subprotocol == PROTO
        hello = stream_pb2.StreamClientMessage(authenticate={"token": served.mesh.mint.token(tenant, "read")})
        await ws.send(hello.SerializeToString())
        sub = stream_pb2.StreamClientMessage(subscribe={"id": "p1", "selector": {"metric": metric}})
        await ws.send(sub.SerializeToString())
        acks = []
        while len(acks) < 2:
            message = stream_pb2.StreamServerMessage.FromString(await asyncio.wait_for(ws.recv(), 10))
            if message.WhichOneof("message") == "ack":
                acks.append((message.ack.id, message.ack.type))
        assert acks == [("", "auth"), ("p1", "subscribe")]
        await _subscribers(served, tenant, metric, 1)
        served.mesh.query.publish(tenant, _points(metric, 2, "z"))
        received: list[common_pb2.Point] = []
        while len(received) < 2:
            message = stream_pb2.StreamServerMessage.FromString(await asyncio.wait_for(ws.recv(), 10))
            if message.WhichOneof("message") == "points":
                assert message.points.subscription_id == "p1"
                received.extend(message.points.points)
        assert [(p.metric, dict(p.labels), p.timestamp_ns) for p in received] == [
            (metric, {"host": "z"}, 1),
            (metric, {"host": "z"}, 2),
        ]
        await ws.send(stream_pb2.StreamClientMessage(unsubscribe={"id": "p1"}).SerializeToString())
        message = stream_pb2.StreamServerMessage.FromString(await asyncio.wait_for(ws.recv(), 10))
        assert message.ack.type == "unsubscribe"


async def test_no_authentication_in_time_closes_4401(served) -> None:
    async with websockets.connect(served.ws_url, subprotocols=[JSON]) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401


async def test_bad_token_and_bad_messages(served) -> None:
    async with websockets.connect(served.ws_url, additional_headers={"Authorization": "Bearer nope"}) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401
    auth = {"Authorization": f"Bearer {served.mesh.mint.token('t-x', 'read')}"}
    async with websockets.connect(served.ws_url, subprotocols=[JSON], additional_headers=auth) as ws:
        await ws.send("not json")
        error = await _recv_json(ws, "error")
        assert error["code"] == "INVALID_ARGUMENT"
        await ws.send(orjson.dumps({"type": "subscribe", "id": "a", "selector": {"matchers": []}}).decode())
        error = await _recv_json(ws, "error")
        assert error["id"] == "a" and "selector" in error["message"]
        await ws.send(orjson.dumps({"type": "ping"}).decode())
        assert (await _recv_json(ws, "pong"))["time_ns"] > 0


async def test_write_only_token_cannot_subscribe(served) -> None:
    auth = {"Authorization": f"Bearer {served.mesh.mint.token('t-y', 'write')}"}
    async with websockets.connect(served.ws_url, subprotocols=[JSON], additional_headers=auth) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "id": "a", "selector": {"metric": "m"}}).decode())
        error = await _recv_json(ws, "error")
        assert error["code"] == "PERMISSION_DENIED"


async def test_server_pings_quiet_sockets(served) -> None:
    auth = {"Authorization": f"Bearer {served.mesh.mint.token('t-p', 'read')}"}
    async with websockets.connect(served.ws_url, subprotocols=[JSON], additional_headers=auth) as ws:
        ping = await _recv_json(ws, "ping")
        assert ping["time_ns"] > 0
        await ws.send(orjson.dumps({"type": "pong"}).decode())


async def test_unknown_subprotocol_is_refused(served) -> None:
    with pytest.raises(websockets.InvalidHandshake):
        async with websockets.connect(served.ws_url, subprotocols=["mqtt"]):
            pass


@pytest.mark.parametrize("listener", ["lean", "granian"])
async def test_slow_consumer_is_disconnected_with_4008(served, listener: str) -> None:
    url = served.ws_url if listener == "lean" else served.granian_ws_url
    tenant, metric = f"t-{uuid.uuid4().hex[:8]}", f"slow_{uuid.uuid4().hex[:6]}"
    auth = {"Authorization": f"Bearer {served.mesh.mint.token(tenant, 'read')}"}
    ws = await websockets.connect(url, subprotocols=[JSON], additional_headers=auth, max_queue=4, max_size=None)
    await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "selector": {"metric": metric}}).decode())
    await _recv_json(ws, "ack")
    await _subscribers(served, tenant, metric, 1)
    big = "x" * 2000
    for _ in range(60):
        served.mesh.query.publish(
            tenant, [common_pb2.Point(metric=metric, labels={"pad": big}, timestamp_ns=i + 1) for i in range(200)]
        )
        await asyncio.sleep(0.02)
    deadline = time.monotonic() + 30
    with pytest.raises(websockets.ConnectionClosed):
        while time.monotonic() < deadline:
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4008
    assert "slow consumer" in (ws.close_reason or "")


async def test_revoked_token_closes_its_live_socket(served, redis_client) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    token, token_id = served.mesh.api.mint(tenant, "read")
    other = served.mesh.mint.token(tenant, "read")
    revoked_ws = await websockets.connect(
        served.ws_url, subprotocols=[JSON], additional_headers={"Authorization": f"Bearer {token}"}
    )
    kept_ws = await websockets.connect(
        served.ws_url, subprotocols=[JSON], additional_headers={"Authorization": f"Bearer {other}"}
    )
    for ws in (revoked_ws, kept_ws):
        await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "selector": {"metric": "rv"}}).decode())
        await _recv_json(ws, "ack")
    await redis_client.publish(REVOCATION_CHANNEL, f"{token_id} {int(time.time()) + 3600}")
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(revoked_ws.recv(), 10)
    assert revoked_ws.close_code == 4401 and revoked_ws.close_reason == "token revoked"
    await kept_ws.send(orjson.dumps({"type": "ping"}).decode())
    assert (await _recv_json(kept_ws, "pong"))["type"] == "pong"
    await kept_ws.close()


async def _closed(ws: websockets.ClientConnection) -> None:
    with pytest.raises(websockets.ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), 10)


async def test_reauth_rechecks_every_subscription_and_the_socket_follows_the_new_token(served, redis_client) -> None:
    tenant, metric = f"t-{uuid.uuid4().hex[:8]}", f"down_{uuid.uuid4().hex[:6]}"
    first, first_id = served.mesh.api.mint(tenant, "read")
    second, _ = served.mesh.api.mint(tenant, "read")
    write_only, write_only_id = served.mesh.api.mint(tenant, "write")
    ws = await websockets.connect(
        served.ws_url, subprotocols=[JSON], additional_headers={"Authorization": f"Bearer {first}"}
    )
    try:
        for sub_id in ("a", "b"):
            await ws.send(orjson.dumps({"type": "subscribe", "id": sub_id, "selector": {"metric": metric}}).decode())
            await _recv_json(ws, "ack")
        await _subscribers(served, tenant, metric, 1)
        # a refresh to another token that may read: the subscriptions carry on
        await ws.send(orjson.dumps({"type": "auth", "token": second}).decode())
        assert (await _recv_json(ws, "ack"))["op"] == "auth"
        served.mesh.query.publish(tenant, _points(metric, 1))
        assert (await _recv_json(ws, "points"))["id"] in ("a", "b")

        # a downgrade to a token without 'read': every subscription ends, each with an error frame
        await ws.send(orjson.dumps({"type": "auth", "token": write_only}).decode())
        ended = {}
        while len(ended) < 2:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert message["type"] in ("points", "error"), message  # points sent before the re-auth may still arrive
            if message["type"] == "error":
                ended[message["id"]] = message
        assert {m["code"] for m in ended.values()} == {"PERMISSION_DENIED"} and set(ended) == {"a", "b"}
        assert "read" in ended["a"]["message"]
        assert (await _recv_json(ws, "ack"))["op"] == "auth"
        # nothing feeds this socket any more: its upstream subscription is gone
        await eventually(lambda: not any(s.metric == metric for _, s, _ in served.mesh.query.subscribers))
        await ws.send(orjson.dumps({"type": "subscribe", "id": "c", "selector": {"metric": metric}}).decode())
        assert (await _recv_json(ws, "error"))["code"] == "PERMISSION_DENIED"

        # the socket follows the token it holds now: the first one's revocation leaves it open (once a
        # socket still on the first token is closed, the gateway has applied that revocation) ...
        sentinel = await websockets.connect(
            served.ws_url, subprotocols=[JSON], additional_headers={"Authorization": f"Bearer {first}"}
        )
        await sentinel.send(orjson.dumps({"type": "ping"}).decode())
        await _recv_json(sentinel, "pong")
        await redis_client.publish(REVOCATION_CHANNEL, f"{first_id} {int(time.time()) + 3600}")
        await _closed(sentinel)
        assert sentinel.close_code == 4401
        await ws.send(orjson.dumps({"type": "ping"}).decode())
        assert (await _recv_json(ws, "pong"))["type"] == "pong"
        # ... the current one's closes it
        await redis_client.publish(REVOCATION_CHANNEL, f"{write_only_id} {int(time.time()) + 3600}")
        await _closed(ws)
        assert ws.close_code == 4401 and ws.close_reason == "token revoked"
    finally:
        await ws.close()


async def test_expired_token_closes_the_socket(served) -> None:
    token = served.mesh.mint.token("t-exp", "read", ttl=2)
    async with websockets.connect(served.ws_url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 4401 and ws.close_reason == "token expired"


def recording_freezer() -> tuple[HeapFreezer, list[str], list[int]]:
    """A HeapFreezer (minimum 100) whose gc calls are recorded; the list's one int is the count of
    full collections it sees."""
    calls: list[str] = []
    full = [0]
    heap = HeapFreezer(
        minimum=100,
        freeze=lambda: calls.append("freeze"),
        unfreeze=lambda: calls.append("unfreeze"),
        full_collections=lambda: full[0],
        collect=lambda: calls.append("collect"),
    )
    return heap, calls, full


async def test_a_full_worker_refuses_new_sockets_fast_and_explicitly(served_factory) -> None:
    full = served_factory(TSMESH_GATEWAY_WS_MAX_CONNECTIONS="2")
    headers = {"Authorization": f"Bearer {full.mesh.mint.token(f't-{uuid.uuid4().hex[:8]}', 'read')}"}
    held = [await websockets.connect(full.ws_url, additional_headers=headers) for _ in range(2)]
    try:

        async def lean_refused() -> int | None:
            try:
                async with websockets.connect(full.ws_url, additional_headers=headers, open_timeout=5):
                    return None  # not registered yet: the two may still be on their way in
            except websockets.InvalidStatus as exc:
                assert exc.response.headers["Retry-After"] == "5"
                return exc.response.status_code

        assert await eventually(lean_refused, timeout=5) == 503  # before the upgrade
        async with websockets.connect(full.granian_ws_url, additional_headers=headers) as late:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(late.recv(), 5)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013  # try again later
        metrics = (await asyncio.to_thread(urlopen_text, f"{full.http}/metrics")).splitlines()
        assert any(
            line.startswith("tsmesh_gateway_ws_refused_total ") and float(line.split()[1]) >= 2 for line in metrics
        )
        await held.pop().close()

        async def admitted() -> bool | None:
            try:
                async with websockets.connect(full.ws_url, additional_headers=headers, open_timeout=5) as ws:
                    await asyncio.wait_for(ws.ping(), 5)  # served, not closed right after the upgrade
                    return True
            except (websockets.InvalidStatus, websockets.ConnectionClosed):
                return None

        assert await eventually(admitted, timeout=5)  # a socket closed: room again
    finally:
        for ws in held:
            await ws.close()


def test_heap_freezer_freezes_as_sockets_grow_and_thaws_after_churn() -> None:
    heap, calls, full = recording_freezer()
    heap.check(99)
    assert calls == []
    heap.check(100)
    heap.check(125)  # less than a quarter more than at the last freeze
    assert calls == ["freeze"]
    heap.check(126)
    assert calls == ["freeze", "freeze"]
    for _ in range(62):
        heap.closed()
    assert calls[-1] == "freeze"
    heap.closed()  # half of the 126 sockets frozen have closed: their garbage must become collectable
    assert calls[-1] == "unfreeze"
    heap.check(500)
    assert calls.count("freeze") == 2  # not before a full collection has run
    full[0] = 1
    heap.check(500)
    assert calls == ["freeze", "freeze", "unfreeze", "freeze"]


def test_heap_freezer_freezes_the_start_up_state_and_refreezes_it_after_a_thaw() -> None:
    heap, calls, full = recording_freezer()
    heap.start()
    assert calls == ["collect", "freeze"]
    for _ in range(5000):  # short sessions, never more than `minimum` open: never frozen, nothing to thaw
        heap.closed()
    assert calls == ["collect", "freeze"]
    heap.check(100)
    for _ in range(50):
        heap.closed()
    assert calls[-1] == "unfreeze"  # half of the frozen sockets closed
    heap.check(3)
    assert calls[-1] == "unfreeze"  # not before a full collection has run
    full[0] = 1
    heap.check(3)  # then everything alive is frozen again, the start-up state with it
    assert calls == ["collect", "freeze", "freeze", "unfreeze", "freeze"]
