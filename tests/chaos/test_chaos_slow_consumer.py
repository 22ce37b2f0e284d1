"""A slow WebSocket consumer on a private ``make run`` stack: one subscriber stops reading while points
are written through the gateway. The documented policy (ADR 0401): a socket with more than
``TSMESH_GATEWAY_WS_SEND_QUEUE_POINTS`` points waiting is closed with 4008 "slow consumer", and its
queue goes with it. So the other subscribers of the same selector receive every acknowledged point,
the gateway's memory stays bounded, and every acknowledged point is stored exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from chaos_harness import stored  # noqa: E402
from procstats import group_rss  # noqa: E402
from stack import Stack  # noqa: E402
from stack_config import drop_database, private_config  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]

QUEUE_POINTS = 2000  # TSMESH_GATEWAY_WS_SEND_QUEUE_POINTS of the stack under test
FAST_SUBSCRIBERS = 4
BATCHES, BATCH_POINTS = 200, 100
PAD = "x" * 1000  # a label per point (limit 1024): 200 x 100 points are ~22 MB of frames per subscriber
JSON = "tsmesh.json.v1"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    cfg = private_config(tmp_path / "stack")
    s = Stack(cfg, environ={**os.environ, "TSMESH_GATEWAY_WS_SEND_QUEUE_POINTS": str(QUEUE_POINTS)}, out=io.StringIO())
    try:
        s.start()
        yield s
    finally:
        s.stop()
        drop_database(cfg.database)


class Reader:
    """A subscriber that reads every frame at once, keeping what it got and how late it came."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.got: set[tuple[int, float]] = set()
        self.delays: list[float] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in self.ws:
                frame = orjson.loads(message)
                if frame["type"] != "points":
                    continue
                now = time.time_ns()
                for p in frame["points"]:
                    self.got.add((p["timestamp_ns"], p["value"]))
                    self.delays.append((now - p["timestamp_ns"]) / 1e9)


async def subscribe(stack: Stack, metric: str, **options: object) -> websockets.ClientConnection:
    ws = await websockets.connect(
        stack.gateway_url.replace("http", "ws") + "/v1/stream",
        subprotocols=[JSON],
        additional_headers={"Authorization": f"Bearer {stack.token}"},
        max_size=None,
        **options,  # type: ignore[arg-type]
    )
    await ws.send(orjson.dumps({"type": "subscribe", "id": "s", "selector": {"metric": metric}}).decode())
    while orjson.loads(await asyncio.wait_for(ws.recv(), 20))["type"] != "ack":
        pass
    return ws


def points(metric: str, n: int) -> tuple[list[dict[str, object]], list[tuple[int, float]]]:
    base = time.time_ns()
    keys = [(base + i, float(n * BATCH_POINTS + i)) for i in range(BATCH_POINTS)]
    return [{"metric": metric, "labels": {"pad": PAD}, "timestamp_ns": t, "value": v} for t, v in keys], keys


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def gateway_metric(stack: Stack, name: str, **labels: str) -> float:
    """The sum over the gateway's worker processes (a ``pid`` label each, multiprocess mode) of the
    samples of ``name`` with ``labels``, read from its internal metrics port."""
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(stack.metrics_url("gateway"))).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


async def test_a_subscriber_that_stops_reading_is_closed_and_stalls_no_other(stack: Stack) -> None:
    metric = f"chaos_slow_{os.getpid()}"
    auth = {"Authorization": f"Bearer {stack.token}"}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers=auth) as http:
        # a small receive buffer (no autotuning up to tcp_rmem's 32 MiB) and max_queue=1 (the client
        # library stops reading its socket at once): TCP pushes back on the gateway after a few MiB
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.connect(("127.0.0.1", stack.cfg.http_port))
        slow = await subscribe(stack, metric, max_queue=1, sock=sock)
        readers = [Reader(await subscribe(stack, metric)) for _ in range(FAST_SUBSCRIBERS)]

        # the upstream subscription is live once a probe reaches every fast subscriber
        probe = 0
        while not all(r.got for r in readers):
            probe += 1
            body = {"points": [{"metric": metric, "labels": {}, "timestamp_ns": time.time_ns(), "value": -1.0}]}
            answer = await http.post("/v1/write", json=body)
            assert answer.status_code == 200, answer.text
            await asyncio.sleep(0.2)
        probes = {(t, v) for r in readers for t, v in r.got}
        gateway = stack.children["gateway"].pid
        rss_before = group_rss(gateway)

        sent, acked, payload = 0, set(probes), 0
        for n in range(BATCHES):
            batch, keys = points(metric, n)
            body_bytes = orjson.dumps({"points": batch})
            sent += len(keys)
            payload += len(body_bytes)
            answer = await http.post("/v1/write", content=body_bytes, headers={"content-type": "application/json"})
            if answer.status_code == 200 and answer.json()["accepted"] == len(keys):
                acked.update(keys)
        assert len(acked) - len(probes) >= sent // 2, "the load was refused: the scenario tests nothing"
        closes = await gateway_metric(stack, "tsmesh_gateway_ws_closed_total", reason="slow_consumer")
        open_sockets = await gateway_metric(stack, "tsmesh_gateway_ws_connections")

        # every fast subscriber gets every acknowledged point
        deadline = time.monotonic() + 60
        while not all(acked <= r.got for r in readers) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        rss_after = group_rss(gateway)
        for r in readers:
            assert acked <= r.got, f"a fast subscriber missed {len(acked - r.got)} acknowledged points"

        # the slow one was closed with the documented code once it reads again
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(slow.recv(), 30)
        for r in readers:
            await r.ws.close()
            await r.task

    delays = [d for r in readers for d in r.delays]
    growth = rss_after - rss_before
    print(
        f"\nchaos slow WebSocket consumer: availability {len(acked) - len(probes)}/{sent}; "
        f"{FAST_SUBSCRIBERS} fast subscribers got {len(acked)}/{len(acked)} acknowledged points, "
        f"delivery p50 {percentile(delays, 0.5) * 1000:.0f} ms p99 {percentile(delays, 0.99) * 1000:.0f} ms; "
        f"slow one closed {slow.close_code} {slow.close_reason!r} (gateway counted {closes:.0f}, "
        f"{open_sockets:.0f} sockets left open); "
        f"gateway RSS {rss_before / 2**20:.0f} -> {rss_after / 2**20:.0f} MiB with {payload / 2**20:.0f} MiB written"
    )
    assert slow.close_code == 4008 and "slow consumer" in (slow.close_reason or "")
    # closed while the load ran (not when it read again), its socket and queue released at once
    assert closes >= 1 and open_sockets == FAST_SUBSCRIBERS
    # the slow socket's queue is bounded (QUEUE_POINTS), not the whole load it did not read
    assert growth < payload / 2, f"gateway grew {growth / 2**20:.0f} MiB for {payload / 2**20:.0f} MiB written"

    deadline = time.monotonic() + 90  # the writer catches up with the load
    rows = await asyncio.to_thread(stored, stack, metric)
    while not acked <= set(rows) and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        rows = await asyncio.to_thread(stored, stack, metric)
    assert len(rows) == len(set(rows)), "a point was stored twice"
    assert not (acked - set(rows)), f"{len(acked - set(rows))} acknowledged points were not stored"
