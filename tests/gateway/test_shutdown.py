"""A real Granian gateway stopped by SIGTERM (ADR 0454): in-flight requests finish within
``TSMESH_SHUTDOWN_GRACE_SECONDS`` and WebSockets, on both listeners, are closed with 1001 going away."""

from __future__ import annotations

import asyncio
import signal

import httpx
import orjson
import websockets
from testkit import eventually

JSON = "tsmesh.json.v1"


async def _ack(ws: websockets.ClientConnection) -> None:
    while orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] != "ack":
        pass


async def _close_code(ws: websockets.ClientConnection) -> int | None:
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_sigterm_drains_requests_and_closes_websockets_going_away(served_factory) -> None:
    gw = served_factory(TSMESH_SHUTDOWN_GRACE_SECONDS="15", TSMESH_GATEWAY_DEADLINE_SECONDS="15")
    auth = {"Authorization": f"Bearer {gw.mesh.mint.token('t-drain', 'read')}"}
    sockets = [
        await websockets.connect(url, subprotocols=[JSON], additional_headers=auth)
        for url in (gw.ws_url, gw.granian_ws_url)
    ]
    for ws in sockets:
        await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "selector": {"metric": "m"}}).decode())
        await _ack(ws)
    before = len(gw.mesh.auth.metadata)
    async with httpx.AsyncClient(base_url=gw.http, timeout=30) as client:
        # the fake auth answers this login after 5 s: it is in flight when the gateway is told to stop
        login = asyncio.create_task(
            client.post("/v1/auth/login", json={"tenant": "t", "email": "slow@x", "password": "pw"})
        )
        await eventually(lambda: any(m == "Login" for m, _ in gw.mesh.auth.metadata[before:]))
        gw.proc.send_signal(signal.SIGTERM)
        codes = await asyncio.gather(*(_close_code(ws) for ws in sockets))
        answer = await login
    assert codes == [1001, 1001]
    assert answer.status_code == 200 and answer.json()["token_type"] == "Bearer"
    assert await asyncio.to_thread(gw.proc.wait, 30) == 0
