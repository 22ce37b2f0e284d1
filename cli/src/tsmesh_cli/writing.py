"""``write``: batches to the gateway, each acknowledged batch checkpointed, rejections counted."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from tsmesh_cli.checkpoint import Checkpoint
from tsmesh_cli.client import Gateway
from tsmesh_cli.errors import HttpFailure
from tsmesh_cli.formats import Batch

LP_BUCKET = "tsmesh-cli"


@dataclass
class WriteTally:
    """What an import did so far."""

    sent: int = 0
    accepted: int = 0
    rejected: int = 0
    offset: int = 0
    first_errors: list[str] = field(default_factory=list)

    def note_error(self, message: str) -> None:
        if len(self.first_errors) < 5:
            self.first_errors.append(message)


def send_batch(gateway: Gateway, fmt: str, batch: Batch, precision: str, tally: WriteTally) -> None:
    """Send one batch; a partial refusal is counted, any other error raises."""
    if fmt == "lp":
        try:
            gateway.send(
                "POST",
                "/api/v2/write",
                params={"bucket": LP_BUCKET, "precision": precision},
                content=batch.lines,
                headers={"Content-Type": "text/plain; charset=utf-8"},
            )
            tally.accepted += batch.points
        except HttpFailure as exc:
            if exc.status != 400 or "accepted_points" not in exc.details:
                raise
            bad = int(exc.details.get("bad_lines", 0))
            tally.accepted += batch.points - bad
            tally.rejected += bad
            tally.note_error(str(exc))
    else:
        answer = gateway.json("POST", "/v1/write", json={"points": batch.objects})
        tally.accepted += int(answer.get("accepted", 0))
        tally.rejected += int(answer.get("rejected", 0))
        for error in answer.get("errors", [])[:5]:
            tally.note_error(f"point {error.get('index')}: {error.get('field')}: {error.get('reason')}")
    tally.sent += batch.points


def run_import(
    gateway: Gateway,
    fmt: str,
    batches: Iterable[Batch],
    *,
    precision: str,
    tally: WriteTally,
    checkpoint: Checkpoint | None,
    acknowledged_before: int,
    on_batch: Callable[[WriteTally], None],
) -> WriteTally:
    """Send every batch in order; after each acknowledgement the checkpoint moves past it."""
    for batch in batches:
        if batch.points:
            send_batch(gateway, fmt, batch, precision, tally)
        tally.offset = batch.end
        if checkpoint is not None:
            checkpoint.save(batch.end, acknowledged_before + tally.sent)
        on_batch(tally)
    return tally
