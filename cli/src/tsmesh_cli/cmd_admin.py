"""``retention``, ``delete``, ``export`` and ``cardinality``: the data lifecycle (tokens with the ``admin`` scope)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tsmesh_cli import render
from tsmesh_cli.context import as_dict, err, examples, handled, out, session
from tsmesh_cli.errors import REFUSED, CliError
from tsmesh_cli.progress import Meter
from tsmesh_cli.selectors import parse_selector, parse_time_ns

RETENTION_FIELDS = {"raw": "raw_days", "1m": "rollup_1m_days", "1h": "rollup_1h_days"}

retention_app = typer.Typer(
    help="Show or change how long the tenant's data is kept (raw points and each rollup)."
    + examples(
        "tsmesh retention get", "tsmesh retention set --raw 14 --1m 90 --1h 400", "tsmesh retention set --raw default"
    )
)

DELETE_HELP = (
    "Delete the points of the matching series in a time range; rollups of the touched buckets are "
    "recomputed and caches invalidated. Asks for confirmation unless --yes."
    + examples(
        "tsmesh delete 'cpu_usage{host=\"bad-host\"}' --start 2026-01-01T00:00:00Z --end 2026-01-02T00:00:00Z",
        "tsmesh delete 'junk_metric' --start -7d --yes",
    )
)
EXPORT_HELP = (
    "Stream raw points (or a range query's buckets, --query) as JSON lines or CSV to a file or stdout, "
    "with a progress line; any size, in constant memory."
    + examples(
        "tsmesh export cpu_usage --start -1d -O cpu.jsonl",
        "tsmesh export 'cpu_usage{host=\"web-1\"}' --format csv --start -7d > cpu.csv",
        "tsmesh export cpu_usage --query --step 1h --agg max -O hourly.jsonl",
    )
)
CARDINALITY_HELP = (
    "Series per metric, the labels with the most values, and the active-series budget in use."
    + examples("tsmesh cardinality", "tsmesh cardinality --limit 20 -o json")
)


@retention_app.command(
    "get", help="The tenant's retention in days (its own, or the default)." + examples("tsmesh retention get")
)
@handled
def retention_get(
    ctx: typer.Context, output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table"
) -> None:
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("GET", "/v1/admin/retention"))
    _show_retention(answer, output)


@retention_app.command(
    "set",
    help="Change retention; takes effect at the next retention pass. `default` returns to the server's default."
    + examples("tsmesh retention set --raw 14", "tsmesh retention set --1h 730 --1m default"),
)
@handled
def retention_set(
    ctx: typer.Context,
    raw: Annotated[str | None, typer.Option("--raw", help="Days of raw points, or `default`.")] = None,
    one_minute: Annotated[str | None, typer.Option("--1m", help="Days of 1-minute rollups, or `default`.")] = None,
    one_hour: Annotated[str | None, typer.Option("--1h", help="Days of 1-hour rollups, or `default`.")] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    body: dict[str, Any] = {}
    for key, value in (("raw", raw), ("1m", one_minute), ("1h", one_hour)):
        if value is None:
            continue
        if value == "default":
            body[RETENTION_FIELDS[key]] = None
        elif value.isdigit() and int(value) > 0:
            body[RETENTION_FIELDS[key]] = int(value)
        else:
            raise CliError(f"--{key} must be a positive number of days or `default`", REFUSED)
    if not body:
        raise CliError("give at least one of --raw, --1m, --1h", REFUSED)
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("PUT", "/v1/admin/retention", json=body))
    _show_retention(answer, output)


def _show_retention(answer: dict[str, Any], output: str) -> None:
    if output == "json":
        render.as_json(sys.stdout, answer)
        return
    defaults = answer.get("defaults", {})
    rows = []
    for key, field in RETENTION_FIELDS.items():
        own = answer.get(field)
        rows.append([key, own if own is not None else defaults.get(field), "tenant" if own is not None else "default"])
    render.rows_table(out(), ["data", "days", "set by"], rows)


def delete(
    ctx: typer.Context,
    selector: Annotated[str, typer.Argument(help='metric{label="value",...}')],
    start: Annotated[str, typer.Option(help="From (inclusive): RFC 3339, -7d, an epoch.")],
    end: Annotated[str, typer.Option(help="To (exclusive).")] = "now",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    _delete(ctx, selector, start, end, yes)


@handled
def _delete(ctx: typer.Context, selector: str, start: str, end: str, yes: bool) -> None:
    start_ns, end_ns = parse_time_ns(start), parse_time_ns(end)
    body = {"selector": parse_selector(selector), "start_ns": start_ns, "end_ns": end_ns}
    what = f"{selector} from {render.iso(start_ns)} to {render.iso(end_ns)}"
    if not yes and not typer.confirm(f"Delete {what}? This cannot be undone", default=False):
        raise CliError("not deleted", REFUSED)
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("POST", "/v1/admin/delete", json=body))
    err().print(
        f"deleted {answer.get('points_deleted', 0):,} points of {answer.get('series', 0):,} series "
        "(their rollups recomputed)",
        highlight=False,
    )


def export(
    ctx: typer.Context,
    selector: Annotated[str, typer.Argument(help='metric{label="value",...}')],
    start: Annotated[str, typer.Option(help="From: RFC 3339, -7d, an epoch.")] = "-1d",
    end: Annotated[str, typer.Option(help="To.")] = "now",
    fmt: Annotated[str, typer.Option("--format", "-f", help="jsonl or csv.")] = "jsonl",
    query: Annotated[
        bool, typer.Option("--query", help="Export a range query's buckets instead of raw points.")
    ] = False,
    step: Annotated[str, typer.Option(help="Bucket width with --query (e.g. 1h).")] = "",
    agg: Annotated[str, typer.Option(help="Aggregation with --query.")] = "avg",
    output_file: Annotated[
        Path | None, typer.Option("--output-file", "-O", help="Write here instead of stdout.")
    ] = None,
) -> None:
    _export(ctx, selector, start, end, fmt, query, step, agg, output_file)


@handled
def _export(
    ctx: typer.Context,
    selector: str,
    start: str,
    end: str,
    fmt: str,
    query: bool,
    step: str,
    agg: str,
    output_file: Path | None,
) -> None:
    from tsmesh_cli.selectors import parse_duration_ns

    if fmt not in ("jsonl", "csv"):
        raise CliError("--format must be jsonl or csv", REFUSED)
    body: dict[str, Any] = {
        "selector": parse_selector(selector),
        "start_ns": parse_time_ns(start),
        "end_ns": parse_time_ns(end),
        "source": "query" if query else "raw",
    }
    if query:
        body["aggregation"] = agg
        if step:
            body["step_ns"] = parse_duration_ns(step)
    sink = output_file.open("wb") if output_file is not None else sys.stdout.buffer
    try:
        with (
            session(ctx).gateway(timeout=300.0) as gateway,
            gateway.stream("POST", "/v1/admin/export", params={"format": fmt}, json=body) as response,
            Meter(err(), "export", "rows", None) as meter,
        ):
            rows = written = 0
            for chunk in response.iter_bytes(1 << 16):
                sink.write(chunk)
                rows += chunk.count(b"\n")
                written += len(chunk)
                meter.update(rows, written)
    finally:
        if output_file is not None:
            sink.close()
        else:
            sink.flush()


def cardinality(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(help="Rows per list.", min=1, max=1000)] = 10,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table",
) -> None:
    _cardinality(ctx, limit, output)


@handled
def _cardinality(ctx: typer.Context, limit: int, output: str) -> None:
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("GET", "/v1/admin/cardinality", params={"limit": limit}))
    if output == "json":
        render.as_json(sys.stdout, answer)
        return
    console = out()
    console.print(
        f"active series: {answer.get('active_series', 0):,} of {answer.get('max_active_series', 0):,} allowed",
        highlight=False,
    )
    per_metric = [[m.get("metric"), m.get("series")] for m in answer.get("series_per_metric", [])]
    render.rows_table(console, ["metric", "series"], per_metric, title="series per metric")
    top = [[x.get("label"), x.get("values")] for x in answer.get("top_labels", [])]
    render.rows_table(console, ["label", "values"], top, title="labels by number of values")
