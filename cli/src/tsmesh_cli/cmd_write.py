"""``tsmesh write``: files or stdin as line protocol, CSV or JSON lines, resumable after an interrupt."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from tsmesh_cli.checkpoint import Checkpoint, Fingerprint
from tsmesh_cli.client import Gateway
from tsmesh_cli.context import err, examples, handled, session
from tsmesh_cli.errors import PARTIAL, REFUSED, CliError
from tsmesh_cli.formats import FORMATS, batches, guess_format, read_header
from tsmesh_cli.profiles import state_dir
from tsmesh_cli.progress import Meter
from tsmesh_cli.writing import WriteTally, run_import

HELP = (
    "Write points from files (or stdin, `-`) as line protocol, CSV or JSON lines.\n\n"
    "A progress bar shows points/s and an ETA; 429 and 503 answers are retried after their Retry-After. "
    "After each acknowledged batch the byte offset is checkpointed, so running the same command again "
    "after an interrupt resumes where it stopped without resending acknowledged points (`--restart` "
    "starts over). CSV needs a header with metric, timestamp_ns and value; other columns are labels."
    + examples(
        "tsmesh write metrics.lp",
        "tsmesh write --format csv --batch 5000 export.csv",
        "cat points.jsonl | tsmesh write - --format jsonl",
        "tsmesh write --precision s telegraf.lp",
    )
)


def write(
    ctx: typer.Context,
    files: Annotated[list[str], typer.Argument(help="Input files; `-` reads stdin.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="lp, csv, jsonl or auto (by suffix, else sniffed).")
    ] = "auto",
    batch: Annotated[int, typer.Option(help="Points per request (at most the gateway's limit).", min=1)] = 5000,
    precision: Annotated[str, typer.Option(help="Line protocol timestamp unit: ns, us, ms or s.")] = "ns",
    restart: Annotated[bool, typer.Option(help="Ignore a checkpoint and start from the beginning.")] = False,
) -> None:
    """Write points (see the command's help for formats and resuming)."""
    _write(ctx, files, fmt, batch, precision, restart)


@handled
def _write(ctx: typer.Context, files: list[str], fmt: str, batch: int, precision: str, restart: bool) -> None:
    if fmt != "auto" and fmt not in FORMATS:
        raise CliError(f"--format must be auto, {', '.join(FORMATS)}", REFUSED)
    total = WriteTally()
    with session(ctx).gateway() as gateway:
        for name in files:
            one = _write_one(gateway, name, fmt, batch, precision, restart)
            total.sent += one.sent
            total.accepted += one.accepted
            total.rejected += one.rejected
            total.first_errors.extend(one.first_errors)
    if total.rejected:
        for message in total.first_errors[:5]:
            err().print(f"  {message}", highlight=False)
        raise CliError(f"{total.rejected} points rejected, {total.accepted} stored", PARTIAL)


def _write_one(gateway: Gateway, name: str, fmt: str, batch: int, precision: str, restart: bool) -> WriteTally:
    console = err()
    if name == "-":
        stream = sys.stdin.buffer
        peek = stream.peek(4096)[:4096] if hasattr(stream, "peek") else b""
        chosen = fmt if fmt != "auto" else guess_format("", peek.split(b"\n", 1)[0])
        columns = read_header(stream)[0] if chosen == "csv" else None
        with Meter(console, "write stdin", "points", None) as meter:
            tally = run_import(
                gateway,
                chosen,
                batches(stream, chosen, start=0, batch_points=batch, columns=columns),
                precision=precision,
                tally=WriteTally(),
                checkpoint=None,
                acknowledged_before=0,
                on_batch=lambda t: meter.update(t.sent, t.offset),
            )
        return tally
    path = Path(name)
    if not path.is_file():
        raise CliError(f"{name}: no such file", REFUSED)
    checkpoint = Checkpoint(state_dir(os.environ) / "checkpoints", Fingerprint.of(path))
    if restart:
        checkpoint.clear()
    offset, acknowledged = checkpoint.load()
    with path.open("rb") as stream:
        chosen = fmt if fmt != "auto" else guess_format(path.name, stream.readline())
        stream.seek(0)
        columns = None
        if chosen == "csv":
            columns, after_header = read_header(stream)
            offset = max(offset, after_header)
        stream.seek(offset)
        if acknowledged:
            console.print(
                f"{name}: resuming after {acknowledged:,} acknowledged points (byte {offset:,})", highlight=False
            )
        size = path.stat().st_size
        with Meter(console, f"write {path.name}", "points", size, offset) as meter:
            tally = run_import(
                gateway,
                chosen,
                batches(stream, chosen, start=offset, batch_points=batch, columns=columns),
                precision=precision,
                tally=WriteTally(),
                checkpoint=checkpoint,
                acknowledged_before=acknowledged,
                on_batch=lambda t: meter.update(t.sent, t.offset),
            )
    checkpoint.clear()
    console.print(
        f"{name}: sent {tally.sent:,} points this run ({acknowledged:,} before), {tally.accepted:,} stored, "
        f"{tally.rejected:,} rejected",
        highlight=False,
    )
    return tally
