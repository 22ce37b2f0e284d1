"""Fair shares of a gateway worker's WebSockets, on a real Granian gateway (ADR 0453): sockets per
client address and per token, handshakes per address; refused with 429 + Retry-After before the
upgrade (lean listener) or close 4429 after it, and counted in a metric."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from typing import Any

import orjson
import pytest
import websockets
from testkit import eventually

from tsmesh_common.config import ConfigError
from tsmesh_gateway.config import GatewayConfig, Limit, StreamConfig
from tsmesh_gateway.stream.socket_limits import SocketLimits

JSON = "tsmesh.json.v1"
NO_RATE = "1000000:1000000"


def bearer(served: Any, tenant: str | None = None) -> dict[str, str]:
    token = served.mesh.mint.token(tenant or f"t-{uuid.uuid4().hex[:8]}", "read")
    return {"Authorization": f"Bearer {token}"}


async def authenticated(url: str, headers: dict[str, str]) -> websockets.ClientConnection:
    """A socket the gateway has authenticated (it answered a ping after the header's check)."""
    ws = await websockets.connect(url, subprotocols=[JSON], additional_headers=headers)
    await ws.send(orjson.dumps({"type": "ping"}).decode())
    while orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "pong":
        pass
    return ws


async def close_frame(url: str, headers: dict[str, str]) -> tuple[int, str]:
    async with websockets.connect(url, subprotocols=[JSON], additional_headers=headers) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


def limited_total(served: Any, limit: str) -> float:
    with urllib.request.urlopen(f"{served.http}/metrics", timeout=5) as answer:
        lines = answer.read().decode().splitlines()
    prefix = f'tsmesh_gateway_ws_limited_total{{limit="{limit}"}} '
    return sum(float(line.split()[1]) for line in lines if line.startswith(prefix))


async def test_sockets_per_client_address_are_capped_on_both_ports(served_factory: Any) -> None:
    served = served_factory(
        TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_ADDRESS="2",
        TSMESH_GATEWAY_WS_HANDSHAKES_PER_ADDRESS=NO_RATE,
        TSMESH_GATEWAY_TRUSTED_PROXIES="127.0.0.1",
    )
    headers = bearer(served)
    held = [await authenticated(served.ws_url, headers) for _ in range(2)]
    try:
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(served.ws_url, additional_headers=headers)
        assert refused.value.response.status_code == 429
        assert refused.value.response.headers["Retry-After"] == "5"
        assert b"max_connections_per_address" in refused.value.response.body
        code, reason = await close_frame(served.granian_ws_url, headers)
        assert code == 4429 and reason.startswith("max_connections_per_address (retry after 5 s)")
        assert limited_total(served, "max_connections_per_address") >= 2

        # behind a trusted proxy the budget is the forwarded client's, not the proxy's
        elsewhere = await authenticated(served.ws_url, {**headers, "X-Forwarded-For": "203.0.113.7"})
        await elsewhere.close()

        await held.pop().close()

        async def admitted() -> bool:
            try:
                ws = await authenticated(served.ws_url, headers)
            except (websockets.InvalidStatus, websockets.ConnectionClosed):
                return False
            held.append(ws)
            return True

        assert await eventually(admitted, timeout=10)  # a socket closed: room again
    finally:
        for ws in held:
            await ws.close()


async def test_sockets_per_token_are_capped_when_they_authenticate(served_factory: Any) -> None:
    served = served_factory(
        TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_TOKEN="2", TSMESH_GATEWAY_WS_HANDSHAKES_PER_ADDRESS=NO_RATE
    )
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    headers = bearer(served, tenant)
    held = [await authenticated(served.ws_url, headers) for _ in range(2)]
    try:
        code, reason = await close_frame(served.ws_url, headers)
        assert code == 4429 and reason.startswith("max_connections_per_token (retry after 5 s)")
        code, reason = await close_frame(served.granian_ws_url, headers)
        assert code == 4429
        # the same tenant with another token is not held back
        held.append(await authenticated(served.ws_url, bearer(served, tenant)))
        assert limited_total(served, "max_connections_per_token") >= 2
    finally:
        for ws in held:
            await ws.close()


async def test_handshakes_per_client_address_are_rate_limited(served_factory: Any) -> None:
    served = served_factory(TSMESH_GATEWAY_WS_HANDSHAKES_PER_ADDRESS="0.01:3")
    headers = bearer(served)
    for _ in range(3):
        ws = await authenticated(served.ws_url, headers)
        await ws.close()
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(served.ws_url, additional_headers=headers)
    assert refused.value.response.status_code == 429
    assert int(refused.value.response.headers["Retry-After"]) > 1
    assert b"handshakes_per_address" in refused.value.response.body
    code, reason = await close_frame(served.granian_ws_url, headers)
    assert code == 4429 and reason.startswith("handshakes_per_address")
    assert limited_total(served, "handshakes_per_address") >= 2


def test_socket_limit_settings_have_defaults_and_name_the_variable_at_fault() -> None:
    stream = GatewayConfig.from_env({}).stream
    assert (stream.max_connections_per_token, stream.max_connections_per_address) == (1_000, 1_000)
    assert stream.handshakes_per_address == Limit(20.0, 100)
    for name, bad in (
        ("TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_TOKEN", "0"),
        ("TSMESH_GATEWAY_WS_MAX_CONNECTIONS_PER_ADDRESS", "many"),
        ("TSMESH_GATEWAY_WS_HANDSHAKES_PER_ADDRESS", "fast"),
    ):
        with pytest.raises(ConfigError, match=name):
            GatewayConfig.from_env({name: bad})


def test_address_budgets_key_ipv6_clients_on_their_64_and_free_when_sockets_close() -> None:
    limits = SocketLimits(StreamConfig(max_connections_per_address=1, handshakes_per_address=Limit(1000.0, 1000)))
    held = limits.opened("2001:db8::1")
    refusal = limits.handshake("2001:db8::2")
    assert refusal is not None and refusal.limit == "max_connections_per_address"
    assert limits.handshake("2001:db8:0:1::1") is None
    limits.closed(held)
    assert limits.handshake("2001:db8::2") is None
    assert limits.by_address == {}


def test_handshake_rate_refills_at_its_rate() -> None:
    now = [1000.0]
    limits = SocketLimits(StreamConfig(handshakes_per_address=Limit(1.0, 2)), clock=lambda: now[0])
    assert limits.handshake("10.0.0.1") is None and limits.handshake("10.0.0.1") is None
    refusal = limits.handshake("10.0.0.1")
    assert refusal is not None and refusal.limit == "handshakes_per_address" and refusal.retry_after == 1
    assert limits.handshake("10.0.0.2") is None  # another address has its own budget
    now[0] += 1.0
    assert limits.handshake("10.0.0.1") is None
