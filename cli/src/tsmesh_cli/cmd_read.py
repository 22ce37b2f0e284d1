"""``query``, ``series``, ``labels`` and ``tail``: reading through the gateway."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from tsmesh_cli import render
from tsmesh_cli.context import as_dict, err, examples, handled, out, session
from tsmesh_cli.errors import NOT_FOUND, REFUSED, UNAVAILABLE, CliError, HttpFailure, exit_code_for_status
from tsmesh_cli.selectors import parse_duration_ns, parse_selector, parse_selector_or_none, parse_time_ns

QUERY_HELP = "Run a range query: a selector through /v1/query/range, or PromQL through /api/v1/query_range." + examples(
    "tsmesh query 'cpu_usage{host=\"web-1\"}' --start -1h --step 1m",
    "tsmesh query cpu_usage --agg max --output chart",
    "tsmesh query 'rate(http_requests_total[5m])' --promql --output json",
    "tsmesh query cpu_usage --output csv > cpu.csv",
)
SERIES_HELP = "List the series a selector matches." + examples(
    "tsmesh series cpu_usage", "tsmesh series '{host=\"web-1\"}' --limit 50 --output json"
)
LABELS_HELP = "List the values of a label (optionally within a selector)." + examples(
    "tsmesh labels host", "tsmesh labels host --match cpu_usage", "tsmesh labels __name__"
)
TAIL_HELP = "Print points live as they are written (WebSocket /v1/stream), one JSON line or row each." + examples(
    "tsmesh tail cpu_usage",
    "tsmesh tail 'cpu_usage{host=\"web-1\"}' --count 10 --output jsonl",
    'tsmesh tail \'cpu_usage{host=~"web-.*", dc!="test"}\'',
)


def query(
    ctx: typer.Context,
    expression: Annotated[str, typer.Argument(help='A selector (metric{label="v"}) or, with --promql, PromQL.')],
    start: Annotated[str, typer.Option(help="now, -1h, RFC 3339 or an epoch.")] = "-1h",
    end: Annotated[str, typer.Option(help="now, -5m, RFC 3339 or an epoch.")] = "now",
    step: Annotated[str, typer.Option(help="Bucket width (e.g. 1m); default: the range / 250, at least 1s.")] = "",
    agg: Annotated[str, typer.Option(help="avg, sum, min, max, count or last (selectors only).")] = "avg",
    group_by: Annotated[list[str] | None, typer.Option("--by", help="Group by this label (repeat).")] = None,
    promql: Annotated[bool, typer.Option(help="Treat the expression as PromQL.")] = False,
    output: Annotated[str, typer.Option("--output", "-o", help="table, csv, json or chart.")] = "table",
) -> None:
    _query(ctx, expression, start, end, step, agg, group_by or [], promql, output)


@handled
def _query(
    ctx: typer.Context,
    expression: str,
    start: str,
    end: str,
    step: str,
    agg: str,
    group_by: list[str],
    promql: bool,
    output: str,
) -> None:
    if output not in render.OUTPUTS:
        raise CliError(f"--output must be one of {', '.join(render.OUTPUTS)}", REFUSED)
    start_ns, end_ns = parse_time_ns(start), parse_time_ns(end)
    step_ns = parse_duration_ns(step) if step else default_step_ns(start_ns, end_ns)
    selector = None if promql else parse_selector_or_none(expression)
    with session(ctx).gateway() as gateway:
        if selector is None:
            answer = _promql(gateway, expression, start_ns, end_ns, step_ns)
        else:
            body: dict[str, Any] = {
                "selector": selector,
                "start_ns": start_ns,
                "end_ns": end_ns,
                "aggregation": agg,
            }
            body["step_ns"] = step_ns
            if group_by:
                body["group_by"] = group_by
            answer = as_dict(gateway.json("POST", "/v1/query/range", json=body))
    _show_range(answer, output)


def default_step_ns(start_ns: int, end_ns: int) -> int:
    """About 250 buckets over the range (a terminal chart's width and more), never under a second."""
    return max((end_ns - start_ns) // 250, 10**9)


def _promql(gateway: Any, expression: str, start_ns: int, end_ns: int, step_ns: int) -> dict[str, Any]:
    params = {
        "query": expression,
        "start": f"{start_ns / 1e9:.3f}",
        "end": f"{end_ns / 1e9:.3f}",
        "step": f"{step_ns / 1e9:g}",
    }
    try:
        answer = as_dict(gateway.json("GET", "/api/v1/query_range", params=params))
    except HttpFailure as exc:
        if exc.status == 404:
            raise CliError(
                "this gateway has no PromQL API (/api/v1/query_range answered 404); "
                "query a selector instead, e.g. tsmesh query 'cpu{host=\"a\"}'",
                NOT_FOUND,
            ) from None
        raise
    series = []
    for result in answer.get("data", {}).get("result", []):
        labels = dict(result.get("metric", {}))
        metric = labels.pop("__name__", "")
        buckets = [
            {"start_ns": int(float(t) * 1e9), "value": float(v), "count": None} for t, v in result.get("values", [])
        ]
        series.append({"metric": metric, "labels": labels, "buckets": buckets})
    return {"resolution": "promql", "series": series}


def _show_range(answer: dict[str, Any], output: str) -> None:
    headers = ["series", "time", "value", "count"]
    if output == "json":
        render.as_json(sys.stdout, answer)
    elif output == "csv":
        render.rows_csv(sys.stdout, headers, render.range_rows(answer))
    elif output == "chart":
        render.range_chart(out(), answer)
    else:
        render.rows_table(out(), headers, render.range_rows(answer), title=f"resolution: {answer.get('resolution')}")


def series(
    ctx: typer.Context,
    selector: Annotated[str, typer.Argument(help='A PromQL series selector: metric{label="value",label=~"regex",...}')],
    limit: Annotated[int, typer.Option(help="At most this many (0: the server's limit).", min=0)] = 0,
    output: Annotated[str, typer.Option("--output", "-o", help="table, csv or json.")] = "table",
) -> None:
    _series(ctx, selector, limit, output)


@handled
def _series(ctx: typer.Context, selector: str, limit: int, output: str) -> None:
    body = {"selector": parse_selector(selector), "limit": limit}
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("POST", "/v1/series", json=body))
    found = answer.get("series", [])
    rows = [[s.get("metric", ""), render.labels_text(s.get("labels", {}))] for s in found]
    _rows(output, ["metric", "labels"], rows, answer)


def labels(
    ctx: typer.Context,
    label: Annotated[str, typer.Argument(help="The label name.")],
    match: Annotated[str, typer.Option(help="Only series matching this selector.")] = "",
    output: Annotated[str, typer.Option("--output", "-o", help="table, csv or json.")] = "table",
) -> None:
    _labels(ctx, label, match, output)


@handled
def _labels(ctx: typer.Context, label: str, match: str, output: str) -> None:
    body: dict[str, Any] = {"label": label}
    if match:
        body["selector"] = parse_selector(match)
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("POST", "/v1/labels/values", json=body))
    _rows(output, [label], [[v] for v in answer.get("values", [])], answer)


def _rows(output: str, headers: list[str], rows: list[list[Any]], answer: Any) -> None:
    if output == "json":
        render.as_json(sys.stdout, answer)
    elif output == "csv":
        render.rows_csv(sys.stdout, headers, rows)
    elif output == "table":
        render.rows_table(out(), headers, rows)
    else:
        raise CliError("--output must be table, csv or json", REFUSED)


def tail(
    ctx: typer.Context,
    selector: Annotated[str, typer.Argument(help='A PromQL series selector: metric{label="value",label=~"regex",...}')],
    count: Annotated[int, typer.Option(help="Stop after this many points (0: never).", min=0)] = 0,
    output: Annotated[str, typer.Option("--output", "-o", help="text or jsonl.")] = "text",
) -> None:
    _tail(ctx, selector, count, output)


@handled
def _tail(ctx: typer.Context, selector: str, count: int, output: str) -> None:
    target = session(ctx).target()
    token = target.require_token()
    url = "ws" + target.url.removeprefix("http") + "/v1/stream"
    seen = 0
    try:
        with connect(url, subprotocols=["tsmesh.json.v1"], open_timeout=15, max_size=2**24) as ws:  # type: ignore[list-item]
            ws.send(json.dumps({"type": "auth", "token": token}))
            # the gateway has query's PromQL parser read the selector: one parser, its error messages
            ws.send(json.dumps({"type": "subscribe", "id": "tail", "promql": selector}))
            err().print(f"tailing {selector} (Ctrl-C to stop)", highlight=False)
            for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "error":
                    raise CliError(f"stream error: {frame.get('code')}: {frame.get('message')}", _code(frame))
                if kind != "points":
                    continue
                for point in frame.get("points", []):
                    _print_point(point, output)
                    seen += 1
                    if count and seen >= count:
                        return
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise CliError(f"WebSocket refused: HTTP {status}", exit_code_for_status(status)) from None
    except ConnectionClosed as exc:
        raise CliError(f"stream closed: {exc}", UNAVAILABLE) from None
    except OSError as exc:
        raise CliError(f"cannot reach {url}: {exc}", UNAVAILABLE) from None


def _code(frame: dict[str, Any]) -> int:
    return {"UNAUTHENTICATED": 3, "PERMISSION_DENIED": 4, "INVALID_ARGUMENT": REFUSED}.get(str(frame.get("code")), 1)


def _print_point(point: dict[str, Any], output: str) -> None:
    if output == "jsonl":
        sys.stdout.write(json.dumps(point) + "\n")
    else:
        name = point.get("metric", "") + render.labels_text(point.get("labels", {}))
        sys.stdout.write(f"{render.iso(int(point.get('timestamp_ns', 0)))}  {name}  {point.get('value')}\n")
    sys.stdout.flush()
