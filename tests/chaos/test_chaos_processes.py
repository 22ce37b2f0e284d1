"""Services of a private ``make run`` stack killed under load: kill -9 of the writer mid-batch and
of the ingest API mid-stream, SIGTERM of each service. The stack's supervisor restarts them
(``devstack.supervise``); every point the gateway acknowledged is stored exactly once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

import devstack  # noqa: E402
from chaos_harness import chaos_long, stored  # noqa: E402
from stack import Stack  # noqa: E402
from stack_config import StackConfig, drop_database, private_config  # noqa: E402
from stack_supervise import Backoff  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    cfg: StackConfig = private_config(tmp_path / "stack")
    s = Stack(cfg, out=io.StringIO())
    try:
        s.start()
        yield s
    finally:
        s.stop()
        drop_database(cfg.database)


class GatewayLoad:
    """JSON batches through the gateway from a thread; counts sent and acknowledged."""

    def __init__(self, stack: Stack, metric: str) -> None:
        self._stack = stack
        self._metric = metric
        self.sent = 0
        self.acked: set[tuple[int, float]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GatewayLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        base = time.time_ns()
        n = 0
        while not self._stop.is_set():
            pts = [(base + n * 1000 + i, float(n * 1000 + i)) for i in range(50)]
            points = [
                {"metric": self._metric, "labels": {"w": str(i % 5)}, "timestamp_ns": ts, "value": v}
                for i, (ts, v) in enumerate(pts)
            ]
            body = json.dumps({"points": points}).encode()
            self.sent += len(pts)
            request = urllib.request.Request(
                self._stack.gateway_url + "/v1/write",
                data=body,
                headers={"Authorization": f"Bearer {self._stack.token}", "Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    if json.loads(response.read() or b"{}").get("accepted", len(pts)) == len(pts):
                        self.acked.update(pts)
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.05)
            n += 1
            time.sleep(0.01)


def kill_and_recover(stack: Stack, name: str, sig: signal.Signals) -> str:
    """Send ``sig`` to service ``name``, supervise until it runs again; returns the supervisor's output."""
    victim = stack.children[name].pid
    os.killpg(victim, sig)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        devstack.supervise(stack, Backoff(), until=lambda: stack.children[name].pid != victim)
    return err.getvalue()


def check(stack: Stack, load: GatewayLoad, metric: str, name: str) -> None:
    share = len(load.acked) / load.sent if load.sent else 0.0
    print(f"\nchaos {name}: availability {len(load.acked)}/{load.sent} = {share:.3f}")
    deadline = time.monotonic() + 90
    rows = stored(stack, metric)
    while not load.acked <= set(rows) and time.monotonic() < deadline:
        time.sleep(0.5)
        rows = stored(stack, metric)
    assert len(rows) == len(set(rows)), "a point was stored twice"
    assert not (load.acked - set(rows)), f"{len(load.acked - set(rows))} acknowledged points were not stored"


@pytest.mark.parametrize(
    ("name", "sig"),
    [
        ("ingest_writer", signal.SIGKILL),
        ("ingest", signal.SIGKILL),
        *(
            pytest.param(svc, signal.SIGTERM, marks=chaos_long)
            for svc in ("ingest_writer", "ingest", "query", "auth", "gateway")
        ),
    ],
    ids=lambda v: v.name if isinstance(v, signal.Signals) else v,
)
def test_a_service_killed_under_load_is_restarted_and_loses_no_acknowledged_point(
    stack: Stack, name: str, sig: signal.Signals
) -> None:
    metric = f"chaos_{name}_{sig.name.lower()}"
    with GatewayLoad(stack, metric) as load:
        time.sleep(2.0)
        output = kill_and_recover(stack, name, sig)
        time.sleep(5.0)
    assert f"{name} exited with code" in output
    check(stack, load, metric, f"{sig.name} of {name}")
