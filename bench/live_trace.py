"""Bench-only per-hop timestamps of the live path (``bench_gateway.py --trace``).

Each hop records ``(point timestamp, wall clock ns)`` pairs; the benchmark writes points with
unique timestamps, so it can join every hop with the write acknowledgement and the frame receipt.
Hooks are installed by monkeypatching, never by product code:

- ingest (through ``live_trace_site/sitecustomize.py`` on ``PYTHONPATH``): ``publish`` (the
  acknowledged batch is queued for its Redis PUBLISH);
- query (the same way): ``accepted`` (ingest's
  ``accepted_at_ns`` of the published batch), ``redis`` (the batch reaches ``LiveHub.dispatch``),
  ``stream`` (the Subscribe generator hands the response to gRPC);
- gateway (from ``bench_gateway.create_bench_app``): ``gateway`` (an upstream message reaches its
  feed), ``socket`` (the frame was written to the socket's transport);
- the benchmark's client processes: ``client`` (the frame reached the client's socket: the
  kernel's receive time) and ``read`` (the client process read it).

SIGUSR2 clears the records, SIGUSR1 dumps them to ``$TSMESH_BENCH_TRACE_DIR/<hop>-<pid>.bin``.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from array import array
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ENV = "TSMESH_BENCH_TRACE_DIR"
HOPS = ("accepted", "publish", "redis", "stream", "gateway", "socket", "client", "read")
_records: dict[str, array[int]] = {}


def _rec(hop: str) -> array[int]:
    found = _records.get(hop)
    if found is None:
        found = _records[hop] = array("q")
    return found


def _dump(*_: Any) -> None:
    out = Path(os.environ[ENV])
    for hop, values in _records.items():
        (out / f"{hop}-{os.getpid()}.bin").write_bytes(values.tobytes())


def _clear(*_: Any) -> None:
    for values in _records.values():
        del values[:]


def _signals(role: str) -> None:
    """Dump/clear on signals; also record every garbage collection's (generation, pause ns)."""
    signal.signal(signal.SIGUSR1, _dump)
    signal.signal(signal.SIGUSR2, _clear)
    pauses, started = _rec(f"gc{role}"), [0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.thread_time_ns()
        else:
            pauses.append(info["generation"])
            pauses.append(time.thread_time_ns() - started[0])

    gc.callbacks.append(on_gc)


def gc_summary(pairs: list[tuple[int, int]]) -> str:
    """Collections per generation with their longest and total CPU time (not wall clock: a
    collection preempted by another process would look longer than it costs)."""
    parts = []
    for generation in (0, 1, 2):
        pauses = [ns / 1e6 for gen, ns in pairs if gen == generation]
        if pauses:
            parts.append(
                f"gen{generation}: {len(pauses)}, longest {max(pauses):.1f} ms CPU, total {sum(pauses):.1f} ms"
            )
    return "; ".join(parts) or "none"


def _stamp(hop: array[int], points: Iterable[Any]) -> None:
    now = time.time_ns()
    for point in points:
        hop.append(point.timestamp_ns)
        hop.append(now)


def install_ingest() -> None:
    from tsmesh.v1 import common_pb2

    from tsmesh_ingest import live

    published = _rec("publish")
    publish = live.LivePublisher.publish

    def traced_publish(self: Any, tenant_id: str, batches: Any) -> None:
        for value in batches:
            _stamp(published, common_pb2.PointBatch.FromString(value).points)
        publish(self, tenant_id, batches)

    live.LivePublisher.publish = traced_publish  # type: ignore[method-assign]
    _signals("ingest")


def install_query() -> None:
    from tsmesh.v1 import common_pb2

    from tsmesh_query import live

    accepted, redis, stream = _rec("accepted"), _rec("redis"), _rec("stream")
    dispatch = live.LiveHub.dispatch
    subscribe = live.LiveHub.stream

    def traced_dispatch(self: Any, channel: str, data: bytes) -> None:
        now = time.time_ns()
        batch = common_pb2.PointBatch.FromString(data)
        for point in batch.points:
            accepted.append(point.timestamp_ns)
            accepted.append(batch.accepted_at_ns)
            redis.append(point.timestamp_ns)
            redis.append(now)
        dispatch(self, channel, data)

    async def traced_stream(self: Any, *args: Any, **kwargs: Any) -> Any:
        async for response in subscribe(self, *args, **kwargs):
            if response.HasField("points"):
                _stamp(stream, response.points.points)
            yield response

    live.LiveHub.dispatch = traced_dispatch  # type: ignore[method-assign]
    live.LiveHub.stream = traced_stream  # type: ignore[method-assign]
    _signals("query")


def install_gateway() -> None:
    from tsmesh_gateway.stream import connection, hub

    gateway, socket = _rec("gateway"), _rec("socket")
    deliver = hub.Feed._deliver
    flush_now = connection.Connection.flush_now

    def traced_deliver(self: Any, fragments: Any) -> None:
        _stamp(gateway, fragments.points)
        deliver(self, fragments)

    def traced_flush(self: Any) -> tuple[int, int]:
        waiting = [f for fragments in self.pending.values() for f in fragments]
        sent = flush_now(self)
        if sent[0] and not self.pending:
            for fragments in waiting:
                _stamp(socket, fragments.points)
        return sent

    hub.Feed._deliver = traced_deliver  # type: ignore[method-assign]
    connection.Connection.flush_now = traced_flush  # type: ignore[method-assign]
    _signals("gateway")


def load(directory: Path) -> dict[str, list[tuple[int, int]]]:
    """hop -> every (point timestamp, time) pair recorded (every process's dump merged); the files
    are removed."""
    merged: dict[str, list[tuple[int, int]]] = {}
    for path in directory.glob("*.bin"):
        values = array("q")
        values.frombytes(path.read_bytes())
        pairs = merged.setdefault(path.name.split("-", 1)[0], [])
        pairs.extend(zip(values[0::2], values[1::2], strict=True))
        path.unlink()
    return merged


def _percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    values.sort()
    pick = [values[min(len(values) - 1, int(q * len(values)))] for q in (0.5, 0.9, 0.99)]
    return f"p50 {pick[0]:8.2f}  p90 {pick[1]:8.2f}  p99 {pick[2]:8.2f} ms  (n={len(values)})"


def timeline(received: list[tuple[int, int]], acks: dict[int, int]) -> str:
    """The worst ack -> receipt latency in each 250 ms of the run (a stall or a standing backlog
    shows as a run of high values, scheduling noise as scattered ones)."""
    worst: dict[int, float] = {}
    start = min(acks.values(), default=0)
    for ts, at in received:
        if ts in acks:
            window = (acks[ts] - start) // 250_000_000
            worst[window] = max(worst.get(window, 0.0), (at - acks[ts]) / 1e6)
    return "  worst ack -> client per 250 ms of the run: " + " ".join(f"{worst[w]:.0f}" for w in sorted(worst))


def breakdown(hops: dict[str, list[tuple[int, int]]], acks: dict[int, int]) -> list[str]:
    """Lines: each hop's time relative to the write acknowledgement (negative: before the ack),
    then each hop's own share (time since the previous hop saw the same point, first sighting)."""
    lines = []
    first: dict[str, dict[int, int]] = {}
    for hop in HOPS:
        seen: dict[int, int] = {}
        for ts, at in hops.get(hop, ()):
            if ts in acks and (ts not in seen or at < seen[ts]):
                seen[ts] = at
        first[hop] = seen
        since_ack = [(at - acks[ts]) / 1e6 for ts, at in hops.get(hop, ()) if ts in acks]
        lines.append(f"  ack -> {hop:<8} {_percentiles(since_ack)}")
    previous = None
    for hop in HOPS:
        if previous is not None and first[hop] and first[previous]:
            before = first[previous]
            own = [(at - before[ts]) / 1e6 for ts, at in first[hop].items() if ts in before]
            lines.append(f"  {previous:>8} -> {hop:<8} {_percentiles(own)}")
        if first[hop]:
            previous = hop
    return lines


def tail(hops: dict[str, list[tuple[int, int]]], acks: dict[int, int], over_ms: float = 5.0) -> str:
    """Where the late deliveries spent their time: for every point one of whose frames arrived more
    than ``over_ms`` after its ack, the mean time of each hop on its slowest path (first sighting
    up to the gateway, last sighting after it), so the hops add up to its worst delivery. The last
    ``socket`` and the last ``client`` sighting may be different sockets' frames: read those two
    hops together."""
    pick = {"publish": min, "redis": min, "stream": min, "gateway": min, "socket": max, "client": max}
    at: dict[str, dict[int, int]] = {}
    for hop, choose in pick.items():
        seen: dict[int, int] = {}
        for ts, when in hops.get(hop, ()):
            if ts in acks:
                seen[ts] = choose(seen[ts], when) if ts in seen else when
        at[hop] = seen
    late = [ts for ts, when in at["client"].items() if (when - acks[ts]) / 1e6 > over_ms]
    if not late:
        return f"  no point delivered later than {over_ms:g} ms"
    sums = dict.fromkeys(pick, 0.0)
    counted = 0
    for ts in late:
        if not all(ts in at[hop] for hop in pick):
            continue
        counted += 1
        previous = acks[ts]
        for hop in pick:
            sums[hop] += (at[hop][ts] - previous) / 1e6
            previous = at[hop][ts]
    if not counted:
        return f"  {len(late)} points had a frame later than {over_ms:g} ms; no hop times for them (traces missing)"
    parts = " + ".join(f"{hop} {total / counted:.2f}" for hop, total in sums.items())
    worst = max(late, key=lambda ts: at["client"][ts] - acks[ts])
    chain = " ".join(f"{hop} {(at[hop][worst] - acks[worst]) / 1e6:.2f}" for hop in pick if worst in at[hop])
    start = min(acks.values())
    return (
        f"  {len(late)} of {len(at['client'])} points had a frame later than {over_ms:g} ms; mean ms to: {parts}\n"
        f"  slowest point, acked {(acks[worst] - start) / 1e9:.2f} s into the run, ms after its ack: {chain}"
    )
