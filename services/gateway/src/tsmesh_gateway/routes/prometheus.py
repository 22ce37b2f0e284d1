"""Prometheus HTTP API v1, so Grafana's Prometheus data source reads tsmesh unchanged.

Translation only: parameters (query string and form-encoded POST bodies) become Prom* RPCs of
the query service, answers become Prometheus's JSON envelope, errors its ``errorType``s:
``bad_data`` 400, ``execution`` 422 (a query limit is one too), ``timeout`` 503, ``unavailable`` 503.
So unlike the other families these handlers are not wrapped in ``deps.endpoint``: every failure
answers Prometheus's error envelope (:func:`failure`, built on ``http_errors.to_http_error``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tsmesh.v1 import query_pb2

from tsmesh_gateway.deps import Caller, Deps
from tsmesh_gateway.http_errors import to_http_error

BUILD_INFO = {
    "version": "2.42.0",
    "revision": "tsmesh",
    "branch": "tsmesh",
    "buildUser": "tsmesh",
    "buildDate": "20260101-00:00:00",
    "goVersion": "go1.19",
}
QUERY_LIMITS = frozenset({"max_series", "max_series_scan", "max_points"})
ERROR_TYPES = {400: "bad_data", 422: "execution", 503: "unavailable", 504: "timeout"}
_DURATION = re.compile(r"(\d+)(ms|y|w|d|h|m|s)")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
MIN_TIME_MS = -(2**62) // 1_000_000
MAX_TIME_MS = 2**62 // 1_000_000
JSON = "application/json"


class BadData(Exception):
    """A parameter Prometheus would refuse with ``bad_data``."""


Params = dict[str, list[str]]


def parse_time(text: str, name: str) -> int:
    """RFC 3339 or Unix seconds (float) to Unix milliseconds."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise BadData(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp') from None
        if when.tzinfo is None:
            raise BadData(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp') from None
        return round(when.timestamp() * 1000)
    if not math.isfinite(seconds):
        raise BadData(f'invalid parameter "{name}": cannot parse "{text}" to a valid timestamp')
    return max(MIN_TIME_MS, min(MAX_TIME_MS, round(seconds * 1000)))


def parse_duration(text: str, name: str) -> int:
    """Float seconds or a Prometheus duration (``1m30s``) to milliseconds."""
    try:
        seconds = float(text)
    except ValueError:
        pos, total = 0, 0
        for match in _DURATION.finditer(text):
            if match.start() != pos:
                break
            total += int(match.group(1)) * _UNIT_MS[match.group(2)]
            pos = match.end()
        if pos != len(text) or not text:
            raise BadData(f'invalid parameter "{name}": cannot parse "{text}" to a valid duration') from None
        return total
    if not math.isfinite(seconds) or seconds * 1000 >= 2**63:
        raise BadData(f'invalid parameter "{name}": cannot parse "{text}" to a valid duration')
    return round(seconds * 1000)


def format_value(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)`` as Prometheus writes sample values."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    if "e" in text or "E" in text:
        text = f"{value:.17f}".rstrip("0").rstrip(".")
        if float(text) != value:  # pragma: no cover - repr is exact, the plain form must be too
            text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _seconds(ms: int) -> float | int:
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def success(data: Any, headers: dict[str, str]) -> Response:
    return Response(orjson.dumps({"status": "success", "data": data}), 200, headers=headers, media_type=JSON)


def failure(exc: BaseException) -> Response:
    """Prometheus's error envelope for any exception of a route."""
    if isinstance(exc, BadData):
        body = {"status": "error", "errorType": "bad_data", "error": str(exc)}
        return Response(orjson.dumps(body), 400, media_type=JSON)
    error = to_http_error(exc)
    status, error_type, headers = error.status, ERROR_TYPES.get(error.status, error.code.lower()), error.headers
    over_limit = error.code == "RESOURCE_EXHAUSTED" and error.details.get("limit") in QUERY_LIMITS
    if over_limit or error.code == "FAILED_PRECONDITION":
        status, error_type, headers = 422, "execution", {}
    elif error.code == "DEADLINE_EXCEEDED":
        status, error_type = 503, "timeout"
    message, field = error.message, error.details.get("field")
    if error.code == "INVALID_ARGUMENT" and field and message.startswith(f"{field}: "):
        message = f'invalid parameter "{field}": {message[len(field) + 2 :]}'  # Prometheus's words
    body = {"status": "error", "errorType": error_type, "error": message}
    return Response(orjson.dumps(body), status, headers=headers, media_type=JSON)


def _labels(labels: Any) -> dict[str, str]:
    return {label.name: label.value for label in labels}


def query_data(answer: query_pb2.PromQueryResponse) -> dict[str, Any]:
    """The ``data`` of a query answer."""
    kind = answer.result_type
    if kind == "string":
        return {"resultType": "string", "result": [None, answer.string_value]}
    if kind == "scalar":
        s = answer.series[0]
        return {"resultType": "scalar", "result": [_seconds(s.timestamps_ms[0]), format_value(s.values[0])]}
    if kind == "vector":
        return {
            "resultType": "vector",
            "result": [
                {"metric": _labels(s.labels), "value": [_seconds(s.timestamps_ms[0]), format_value(s.values[0])]}
                for s in answer.series
            ],
        }
    return {
        "resultType": "matrix",
        "result": [
            {
                "metric": _labels(s.labels),
                "values": [[_seconds(t), format_value(v)] for t, v in zip(s.timestamps_ms, s.values, strict=True)],
            }
            for s in answer.series
        ],
    }


class PrometheusApi:
    """The handlers, bound to the gateway's dependencies."""

    def __init__(self, deps: Deps, clock: Callable[[], float] = time.time) -> None:
        self._deps = deps
        self._clock = clock

    async def _params(self, request: Request) -> Params:
        params: Params = {}
        for key, value in request.query_params.multi_items():
            params.setdefault(key, []).append(value)
        if request.method == "POST":
            body = await self._deps.body(request)
            for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
                params.setdefault(key, []).append(value)
        return params

    async def _call(self, caller: Caller, method: Any, message: Any) -> Any:
        upstream = self._deps.upstreams.query
        return await upstream.unary(method, message, authorization=caller.authorization, idempotent=True)

    def _stub(self) -> Any:
        return self._deps.upstreams.query_stub

    def _time(self, params: Params, name: str, default: int) -> int:
        values = params.get(name)
        return parse_time(values[0], name) if values and values[0] else default

    async def query(self, request: Request, caller: Caller) -> Any:
        params = await self._params(request)
        text = _one(params, "query")
        at = self._time(params, "time", round(self._clock() * 1000))
        timeout = parse_duration(params["timeout"][0], "timeout") if params.get("timeout") else 0
        answer = await self._call(
            caller, self._stub().PromQuery, query_pb2.PromQueryRequest(query=text, time_ms=at, timeout_ms=timeout)
        )
        return query_data(answer)

    async def query_range(self, request: Request, caller: Caller) -> Any:
        params = await self._params(request)
        text = _one(params, "query")
        start = parse_time(_one(params, "start"), "start")
        end = parse_time(_one(params, "end"), "end")
        if end < start:
            raise BadData('invalid parameter "end": end timestamp must not be before start time')
        step = parse_duration(_one(params, "step"), "step")
        if step <= 0:
            raise BadData(
                'invalid parameter "step": zero or negative query resolution step widths are not accepted. '
                "Try a positive integer"
            )
        if (end - start) // step > 11_000:
            raise BadData(
                "exceeded maximum resolution of 11,000 points per timeseries. "
                "Try decreasing the query resolution (?step=XX)"
            )
        timeout = parse_duration(params["timeout"][0], "timeout") if params.get("timeout") else 0
        message = query_pb2.PromQueryRangeRequest(
            query=text, start_ms=start, end_ms=end, step_ms=step, timeout_ms=timeout
        )
        return query_data(await self._call(caller, self._stub().PromQueryRange, message))

    def _range(self, params: Params) -> tuple[int, int]:
        start = self._time(params, "start", 0)
        end = self._time(params, "end", 0)
        return start, end

    def _limit(self, params: Params) -> int:
        values = params.get("limit")
        if not values or not values[0]:
            return 0
        try:
            limit = int(values[0])
        except ValueError:
            raise BadData(f'invalid parameter "limit": cannot parse "{values[0]}" to a valid limit') from None
        return max(limit, 0)

    async def series(self, request: Request, caller: Caller) -> Any:
        params = await self._params(request)
        match = params.get("match[]", [])
        if not match:
            raise BadData("no match[] parameter provided")
        start, end = self._range(params)
        message = query_pb2.PromSeriesRequest(match=match, start_ms=start, end_ms=end, limit=self._limit(params))
        answer = await self._call(caller, self._stub().PromSeries, message)
        return [_labels(s.labels) for s in answer.series]

    async def labels(self, request: Request, caller: Caller) -> Any:
        params = await self._params(request)
        start, end = self._range(params)
        message = query_pb2.PromLabelNamesRequest(
            match=params.get("match[]", []), start_ms=start, end_ms=end, limit=self._limit(params)
        )
        return list((await self._call(caller, self._stub().PromLabelNames, message)).names)

    async def label_values(self, request: Request, caller: Caller) -> Any:
        name = request.path_params["name"]
        if name.startswith("U__"):  # Prometheus's escaping of UTF-8 label names
            name = _unescape(name)
        if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name):
            raise BadData(f'invalid label name: "{name}"')
        params = await self._params(request)
        start, end = self._range(params)
        message = query_pb2.PromLabelValuesRequest(
            label=name, match=params.get("match[]", []), start_ms=start, end_ms=end, limit=self._limit(params)
        )
        return list((await self._call(caller, self._stub().PromLabelValues, message)).values)

    async def metadata(self, request: Request, caller: Caller) -> Any:
        return {}

    async def buildinfo(self, request: Request, caller: Caller) -> Any:
        return BUILD_INFO

    async def rules(self, request: Request, caller: Caller) -> Any:
        return {"groups": []}

    async def alerts(self, request: Request, caller: Caller) -> Any:
        return {"alerts": []}

    async def exemplars(self, request: Request, caller: Caller) -> Any:
        return []


def _one(params: Params, name: str) -> str:
    values = params.get(name)
    if not values or values[0] == "":
        raise BadData(f'invalid parameter "{name}": missing')
    return values[0]


def _unescape(name: str) -> str:
    out, i, body = [], 0, name[3:]
    while i < len(body):
        if body[i] == "_" and (end := body.find("_", i + 1)) > i + 1:
            try:
                out.append(chr(int(body[i + 1 : end], 16)))
                i = end + 1
                continue
            except ValueError:
                pass
        out.append(body[i])
        i += 1
    return "".join(out)


Handler = Callable[[Request, Caller], Awaitable[Any]]


def prometheus_routes(deps: Deps) -> list[Route]:
    """``/api/v1/...`` routes; every one needs scope ``read`` and the ``query`` route class budget."""
    api = PrometheusApi(deps)

    def route(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def answer(request: Request) -> Response:
            try:
                caller = await deps.authorize(request, "query", "read")
                return success(await handler(request, caller), caller.headers)
            except Exception as exc:  # noqa: BLE001 - every failure answers Prometheus's error envelope
                return failure(exc)

        answer.__name__ = handler.__name__
        return answer

    both = ["GET", "POST"]
    return [
        Route("/api/v1/query", route(api.query), methods=both),
        Route("/api/v1/query_range", route(api.query_range), methods=both),
        Route("/api/v1/series", route(api.series), methods=both),
        Route("/api/v1/labels", route(api.labels), methods=both),
        Route("/api/v1/label/{name}/values", route(api.label_values), methods=["GET"]),
        Route("/api/v1/metadata", route(api.metadata), methods=["GET"]),
        Route("/api/v1/status/buildinfo", route(api.buildinfo), methods=["GET"]),
        Route("/api/v1/rules", route(api.rules), methods=["GET"]),
        Route("/api/v1/alerts", route(api.alerts), methods=["GET"]),
        Route("/api/v1/query_exemplars", route(api.exemplars), methods=both),
    ]
