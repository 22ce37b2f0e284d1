"""The hand-written OpenAPI 3.1 description of the gateway's HTTP API (served at ``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from tsmesh_gateway.push.openapi import push_paths

INT64 = {"type": "integer", "minimum": -(2**63), "maximum": 2**63 - 1}
STRING = {"type": "string"}
# What the store can hold (ADR 0210): no NUL (lone surrogates cannot be written in JSON that parses).
STORABLE = {"type": "string", "pattern": "^[^\\u0000]*$"}
MAX_SECONDS = 10 * 366 * 86_400


def _obj(properties: dict[str, Any], required: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": {"description": "Invalid argument", **_json(_ref("Error"))},
    "401": {"description": "Unauthenticated", **_json(_ref("Error"))},
    "403": {"description": "Permission denied", **_json(_ref("Error"))},
    "404": {"description": "Not found", **_json(_ref("Error"))},
    "408": {"description": "Request body too slow", **_json(_ref("Error"))},
    "409": {"description": "Conflict", **_json(_ref("Error"))},
    "413": {"description": "Request body too large", **_json(_ref("Error"))},
    "415": {"description": "Unsupported media type or encoding", **_json(_ref("Error"))},
    "429": {"description": "Rate limited (see Retry-After)", **_json(_ref("Error"))},
    "503": {"description": "Upstream unavailable", **_json(_ref("Error"))},
    "504": {"description": "Upstream deadline exceeded", **_json(_ref("Error"))},
}

SCHEMAS: dict[str, Any] = {
    "Error": _obj(
        {
            "code": {"type": "string", "description": "gRPC status code name, e.g. INVALID_ARGUMENT"},
            "message": STRING,
            "details": {"type": "object", "description": "field, limit, retry_after_seconds, line, ..."},
            "request_id": {"type": ["string", "null"]},
        },
        ["code", "message", "details", "request_id"],
    ),
    "Matcher": _obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 1024},
            "op": {"enum": ["=", "!=", "=~", "!~"]},
            "value": {"type": ["string", "null"], "maxLength": 1024},
        },
        ["name"],
    ),
    "Selector": _obj(
        {
            "metric": {"type": ["string", "null"], "minLength": 1, "maxLength": 256},
            "matchers": {"type": ["array", "null"], "items": _ref("Matcher"), "maxItems": 32},
        },
        description="A metric name and/or label matchers (RE2 regexes, anchored); at least one of them.",
        anyOf=[
            {"required": ["metric"], "properties": {"metric": {"type": "string"}}},
            {"required": ["matchers"], "properties": {"matchers": {"type": "array", "minItems": 1}}},
        ],
    ),
    "Point": _obj(
        {
            "metric": {**STORABLE, "minLength": 1, "maxLength": 256},
            "labels": {"type": ["object", "null"], "propertyNames": STORABLE, "additionalProperties": STORABLE},
            "timestamp_ns": INT64,
            "value": {"type": "number"},
        },
        ["metric", "timestamp_ns", "value"],
    ),
    "PointOut": _obj(
        {
            "metric": STRING,
            "labels": {"type": "object", "additionalProperties": STRING},
            "timestamp_ns": INT64,
            "value": {"type": "number"},
        },
        ["metric", "labels", "timestamp_ns", "value"],
    ),
    "WriteRequest": _obj(
        {"points": {"type": "array", "items": _ref("Point"), "minItems": 1, "maxItems": 10000}}, ["points"]
    ),
    "WriteResponse": _obj(
        {
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
            "errors": {
                "type": "array",
                "items": _obj({"index": {"type": "integer"}, "field": STRING, "reason": STRING}),
            },
        },
        ["accepted", "rejected", "errors"],
    ),
    "RangeRequest": _obj(
        {
            "selector": _ref("Selector"),
            "start_ns": INT64,
            "end_ns": INT64,
            "step_ns": INT64,
            "aggregation": {"enum": ["avg", "min", "max", "sum", "count", "first", "last"]},
            "group_by": {"type": "array", "items": STRING},
            "fill": {"enum": ["none", "null", "previous", "linear"]},
        },
        ["selector", "start_ns", "end_ns"],
    ),
    "RangeResponse": _obj(
        {
            "resolution": {"enum": ["raw", "1m", "1h"]},
            "series": {
                "type": "array",
                "items": _obj(
                    {
                        "metric": STRING,
                        "labels": {"type": "object", "additionalProperties": STRING},
                        "buckets": {
                            "type": "array",
                            "items": _obj(
                                {"start_ns": INT64, "value": {"type": ["number", "null"]}, "count": {"type": "integer"}}
                            ),
                        },
                    }
                ),
            },
        },
        ["resolution", "series"],
    ),
    "SelectorRequest": _obj({"selector": _ref("Selector")}, ["selector"]),
    "SeriesRequest": _obj(
        {"selector": _ref("Selector"), "limit": {"type": "integer", "minimum": 0, "maximum": 100000}}, ["selector"]
    ),
    "LabelValuesRequest": _obj(
        {"label": {"type": "string", "minLength": 1, "maxLength": 256}, "selector": _ref("Selector")}, ["label"]
    ),
    "Login": _obj(
        {
            "tenant": {"type": "string", "minLength": 1, "maxLength": 256},
            "email": {"type": "string", "minLength": 1, "maxLength": 320},
            "password": {"type": "string", "minLength": 1, "maxLength": 1024},
        },
        ["tenant", "email", "password"],
    ),
    "RefreshToken": _obj({"refresh_token": {"type": "string", "minLength": 1, "maxLength": 8192}}, ["refresh_token"]),
    "Tokens": _obj(
        {"access_token": STRING, "refresh_token": STRING, "token_type": STRING, "expires_in": {"type": "integer"}},
        ["access_token", "refresh_token", "token_type", "expires_in"],
    ),
    "ApiToken": _obj(
        {
            "id": STRING,
            "name": STRING,
            "scopes": {"type": "array", "items": STRING},
            "created_at": {"type": "integer"},
            "expires_at": {"type": "integer"},
            "last_used_at": {"type": "integer"},
            "revoked": {"type": "boolean"},
        },
        ["id", "name", "scopes"],
    ),
    "CreateToken": _obj(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "scopes": {"type": "array", "items": {"enum": ["read", "write", "admin"]}, "minItems": 1},
            "ttl_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_SECONDS},
        },
        ["name", "scopes"],
    ),
    "TokenWithSecret": _obj(
        {"token": {"$ref": "#/components/schemas/ApiToken"}, "secret": STRING}, ["token", "secret"]
    ),
}


def _op(summary: str, request: str | None, response: str | None, *, status: str = "200", secure: bool = True) -> Any:
    operation: dict[str, Any] = {"summary": summary, "responses": {**ERRORS}}
    if request is not None:
        operation["requestBody"] = {"required": True, **_json(_ref(request))}
    if response is not None:
        operation["responses"][status] = {"description": "OK", **_json(_ref(response))}
    else:
        operation["responses"][status] = {"description": "Done"}
    if not secure:
        operation["security"] = []
    return operation


# The scope each authenticated operation needs (OpenAPI 3.1 lets a non-OAuth security requirement
# name the roles it needs). An ``admin`` token may do everything; a token without the named scope
# gets 403 and no token 401 (tests/e2e/test_gateway_e2e.py checks every operation of the document).
_READ_PREFIXES = ("/v1/query/", "/v1/series", "/v1/labels/", "/api/v1/")
_WRITE_PATHS = {("/v1/write", "post"), ("/api/v2/write", "post"), ("/write", "post")}
_WRITE_PATHS |= {("/api/v1/write", "post"), ("/otlp/v1/metrics", "post")}


def required_scope(path: str, method: str) -> str:
    """The scope that ``method path`` requires (for an operation that needs a credential)."""
    if (path, method) in _WRITE_PATHS:
        return "write"
    if path.startswith(("/v1/admin/", "/v1/tokens")):
        return "admin"
    if path.startswith(_READ_PREFIXES):
        return "read"
    raise KeyError(f"no scope documented for {method.upper()} {path}")


def _document_scopes(paths: dict[str, Any]) -> dict[str, Any]:
    """Name the required scope in every authenticated operation's security requirements."""
    for path, operations in paths.items():
        for method, operation in operations.items():
            requirements = operation.get("security", [{"bearer": []}])
            if requirements:
                scope = required_scope(path, method)
                operation["security"] = [{scheme: [scope] for scheme in r} for r in requirements]
    return paths


def spec() -> dict[str, Any]:
    """The OpenAPI document."""
    token_id = {"name": "token_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
    rotate = _op("Rotate an API token (the old secret keeps working for grace_seconds)", None, "TokenWithSecret")
    rotate["parameters"] = [token_id]
    rotate["requestBody"] = {
        "required": False,
        **_json(_obj({"grace_seconds": {"type": "integer", "minimum": 0, "maximum": MAX_SECONDS}})),
    }
    revoke = _op("Revoke an API token", None, "TokenWithSecret")
    revoke["parameters"] = [token_id]
    revoke["responses"]["200"] = {"description": "Revoked", **_json(_obj({"token": _ref("ApiToken")}, ["token"]))}
    range_get = _op(
        "Aggregate over a time range, parameters in the query string (as Prometheus' query_range); "
        "no request body, the cheapest form for dashboards",
        None,
        "RangeResponse",
    )
    range_get["parameters"] = [
        {
            "name": "metric",
            "in": "query",
            "required": True,
            "description": "the metric name (a selector of matchers only needs the POST form)",
            "schema": {"type": "string", "minLength": 1, "maxLength": 256},
        },
        {
            "name": "match",
            "in": "query",
            "required": False,
            "description": "label matchers name<op>value, op one of =, !=, =~, !~ (the parameter repeated)",
            "schema": {
                "type": "array",
                "maxItems": 32,
                "items": {"type": "string", "maxLength": 1024, "pattern": "^[A-Za-z_][A-Za-z0-9_]*(=~|!~|!=|=)"},
            },
            "style": "form",
            "explode": True,
        },
        {"name": "start_ns", "in": "query", "required": True, "schema": INT64},
        {"name": "end_ns", "in": "query", "required": True, "schema": INT64},
        {"name": "step_ns", "in": "query", "required": False, "schema": INT64},
        {
            "name": "aggregation",
            "in": "query",
            "required": False,
            "schema": SCHEMAS["RangeRequest"]["properties"]["aggregation"],
        },
        {"name": "fill", "in": "query", "required": False, "schema": SCHEMAS["RangeRequest"]["properties"]["fill"]},
        {
            "name": "group_by",
            "in": "query",
            "required": False,
            "description": "labels to group by (the parameter repeated)",
            "schema": {"type": "array", "items": STRING},
            "style": "form",
            "explode": True,
        },
    ]
    influx = _op(
        "InfluxDB v2 line protocol write (partial writes: 400 names the first bad line)", None, None, status="204"
    )
    influx["parameters"] = [
        {"name": "bucket", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
        {"name": "org", "in": "query", "required": False, "schema": STRING},
        {"name": "precision", "in": "query", "required": False, "schema": {"enum": ["ns", "us", "ms", "s"]}},
    ]
    influx["requestBody"] = {"required": True, "content": {"text/plain": {"schema": STRING}}}
    influx["security"] = [{"influxToken": []}]
    list_tokens = _op("List the tenant's API tokens", None, None)
    list_tokens["responses"]["200"] = {
        "description": "OK",
        **_json(_obj({"tokens": {"type": "array", "items": _ref("ApiToken")}}, ["tokens"])),
    }
    jwks = _op("Public signing keys (JWKS)", None, None, secure=False)
    jwks["responses"]["200"] = {
        "description": "OK",
        **_json(_obj({"keys": {"type": "array", "items": {"type": "object"}}}, ["keys"])),
    }
    plain = {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tsmesh gateway",
            "version": "1.0.0",
            "description": "HTTP/JSON API of tsmesh. WebSocket: /v1/stream (subprotocols tsmesh.json.v1, "
            "tsmesh.proto.v1); a subscription gives a structured selector or a PromQL series selector "
            '(`{"type":"subscribe","id":"s1","promql":"cpu{host=~\\"web.*\\"}"}`). '
            "Every response carries X-Request-ID.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Access JWT or API token"},
                "influxToken": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Token <api token>",
                },
            },
        },
        "security": [{"bearer": []}],
        "paths": _document_scopes(
            {
                "/v1/auth/login": {"post": _op("Log in with a password", "Login", "Tokens", secure=False)},
                "/v1/auth/refresh": {"post": _op("Exchange a refresh token", "RefreshToken", "Tokens", secure=False)},
                "/v1/auth/logout": {
                    "post": _op("Revoke a refresh token", "RefreshToken", None, status="204", secure=False)
                },
                "/.well-known/jwks.json": {"get": jwks},
                "/v1/tokens": {
                    "get": list_tokens,
                    "post": _op(
                        "Create an API token (secret shown once)", "CreateToken", "TokenWithSecret", status="201"
                    ),
                },
                "/v1/tokens/{token_id}/rotate": {"post": rotate},
                "/v1/tokens/{token_id}": {"delete": revoke},
                "/v1/write": {"post": _op("Write a JSON batch of points", "WriteRequest", "WriteResponse")},
                "/v1/query/range": {
                    "post": _op("Aggregate over a time range", "RangeRequest", "RangeResponse"),
                    "get": range_get,
                },
                "/v1/query/latest": {
                    "post": {
                        **_op("Latest point of each matching series", "SelectorRequest", None),
                        "responses": {
                            **ERRORS,
                            "200": {
                                "description": "OK",
                                **_json(_obj({"points": {"type": "array", "items": _ref("PointOut")}}, ["points"])),
                            },
                        },
                    }
                },
                "/v1/series": {
                    "post": {
                        **_op("List matching series", "SeriesRequest", None),
                        "responses": {**ERRORS, "200": plain},
                    }
                },
                "/v1/labels/values": {
                    "post": {
                        **_op("Values of a label", "LabelValuesRequest", None),
                        "responses": {
                            **ERRORS,
                            "200": {
                                "description": "OK",
                                **_json(_obj({"values": {"type": "array", "items": STRING}}, ["values"])),
                            },
                        },
                    }
                },
                **_admin_paths(),
                "/api/v2/write": {"post": influx},
                **prometheus_paths(),
                **push_paths(ERRORS),
                "/healthz": {"get": {"summary": "Process liveness", "security": [], "responses": {"200": plain}}},
                "/readyz": {
                    "get": {
                        "summary": "Every upstream SERVING",
                        "security": [],
                        "responses": {"200": plain, "503": {"description": "Not ready", **_json({"type": "object"})}},
                    }
                },
            }
        ),
    }


def _admin_paths() -> dict[str, Any]:
    """The data lifecycle routes (``routes.admin``): admin scope, 403 for read or write tokens."""
    days = {"type": ["integer", "null"], "minimum": 1, "maximum": 36600}
    fields = ("raw_days", "rollup_1m_days", "rollup_1h_days")
    retention_out = _obj(
        {**{f: days for f in fields}, "defaults": _obj({f: {"type": "integer"} for f in fields})}, ["defaults"]
    )
    retention_in = _obj({f: days for f in fields}, additionalProperties=False, minProperties=1)
    get_retention = _op("The tenant's retention in days (null: the default applies)", None, None)
    get_retention["responses"]["200"] = {"description": "OK", **_json(retention_out)}
    put_retention = _op("Change retention (takes effect at the next retention pass; null: the default)", None, None)
    put_retention["requestBody"] = {"required": True, **_json(retention_in)}
    put_retention["responses"]["200"] = {"description": "OK", **_json(retention_out)}
    delete = _op("Delete the matching series' points in [start_ns, end_ns); rollups recomputed, audited", None, None)
    delete["requestBody"] = {
        "required": True,
        **_json(
            _obj({"selector": _ref("Selector"), "start_ns": INT64, "end_ns": INT64}, ["selector", "start_ns", "end_ns"])
        ),
    }
    delete["responses"]["200"] = {
        "description": "Deleted",
        **_json(
            _obj({"series": {"type": "integer"}, "points_deleted": {"type": "integer"}}, ["series", "points_deleted"])
        ),
    }
    streamed = {
        "description": "The export, streamed",
        "content": {"application/x-ndjson": {"schema": STRING}, "text/csv": {"schema": STRING}},
    }
    fmt = {"name": "format", "in": "query", "required": False, "schema": {"enum": ["jsonl", "csv"]}}
    export_post = _op("Export raw points (or, with source=query, a range query's buckets), streamed", None, None)
    export_post["parameters"] = [fmt]
    export_post["requestBody"] = {
        "required": True,
        **_json(
            _obj(
                {
                    "source": {"enum": ["raw", "query"]},
                    "selector": _ref("Selector"),
                    "start_ns": INT64,
                    "end_ns": INT64,
                    "step_ns": INT64,
                    "aggregation": SCHEMAS["RangeRequest"]["properties"]["aggregation"],
                },
                ["selector", "start_ns", "end_ns"],
            )
        ),
    }
    export_post["responses"]["200"] = streamed
    export_get = _op("Export raw points, parameters as GET /v1/query/range's (source=query: its buckets)", None, None)
    export_get["parameters"] = [
        fmt,
        {"name": "source", "in": "query", "required": False, "schema": {"enum": ["raw", "query"]}},
        {"name": "metric", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
        {"name": "start_ns", "in": "query", "required": True, "schema": INT64},
        {"name": "end_ns", "in": "query", "required": True, "schema": INT64},
    ]
    export_get["responses"]["200"] = streamed
    cardinality = _op("Series per metric, labels by number of values, the active-series budget in use", None, None)
    cardinality["parameters"] = [
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        }
    ]
    counted = {"type": "array", "items": {"type": "object"}}
    cardinality["responses"]["200"] = {
        "description": "OK",
        **_json(
            _obj(
                {
                    "series_per_metric": counted,
                    "top_labels": counted,
                    "total_series": {"type": "integer"},
                    "active_series": {"type": "integer"},
                    "max_active_series": {"type": "integer"},
                }
            )
        ),
    }
    return {
        "/v1/admin/retention": {"get": get_retention, "put": put_retention},
        "/v1/admin/delete": {"post": delete},
        "/v1/admin/export": {"get": export_get, "post": export_post},
        "/v1/admin/cardinality": {"get": cardinality},
    }


PROM_ERRORS = {
    code: {"description": text, **_json(_ref("PromError"))}
    for code, text in (
        ("400", "bad_data: a malformed query or parameter (the message names it)"),
        ("401", "Unauthenticated"),
        ("422", "execution: the query cannot be evaluated, or exceeds a query limit"),
        ("429", "Rate limited (see Retry-After)"),
        ("503", "timeout or unavailable"),
    )
}
SCHEMAS["PromSuccess"] = _obj(
    {"status": {"const": "success"}, "data": {}, "warnings": {"type": "array", "items": STRING}}, ["status"]
)
SCHEMAS["PromError"] = _obj(
    {"status": {"const": "error"}, "errorType": STRING, "error": STRING}, ["status", "errorType", "error"]
)
PROM_PARAMS = {
    "query": "PromQL expression",
    "time": "Evaluation time: RFC 3339 or Unix seconds (default: now)",
    "start": "RFC 3339 or Unix seconds",
    "end": "RFC 3339 or Unix seconds",
    "step": "Duration (1m30s) or float seconds",
    "timeout": "Duration or float seconds",
    "match[]": "Series selector; repeatable",
    "limit": "Maximum number of answers",
}


def _prom_op(summary: str, params: tuple[str, ...], required: tuple[str, ...] = (), *, post: bool) -> Any:
    """A Prometheus API v1 operation: parameters in the query string (GET) or a form body (POST)."""
    many = {"type": "array", "items": STRING}
    one_or_many = {"anyOf": [STRING, many]}  # a form body may repeat match[] or give it once
    fields = {
        name: (one_or_many if post else many) if name == "match[]" else {**STRING, "description": PROM_PARAMS[name]}
        for name in params
    }
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": ["prometheus"],
        "responses": {**PROM_ERRORS, "200": {"description": "OK", **_json(_ref("PromSuccess"))}},
    }
    if post:
        schema = _obj(fields, list(required) or None)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": schema}},
        }
    else:
        operation["parameters"] = [
            {"name": name, "in": "query", "required": name in required, "schema": fields[name]} for name in params
        ]
    return operation


def prometheus_paths() -> dict[str, Any]:
    """Prometheus's HTTP API v1 (what Grafana's Prometheus data source calls)."""
    query = ("query", "time", "timeout")
    ranged = ("query", "start", "end", "step", "timeout")
    listing = ("match[]", "start", "end", "limit")
    paths: dict[str, Any] = {}
    for path, summary, params, required in (
        ("/api/v1/query", "Instant PromQL query", query, ("query",)),
        ("/api/v1/query_range", "Range PromQL query", ranged, ("query", "start", "end", "step")),
        ("/api/v1/series", "Series matching match[]", listing, ("match[]",)),
        ("/api/v1/labels", "Label names", listing, ()),
        ("/api/v1/query_exemplars", "Exemplars (always empty)", ("query", "start", "end"), ()),
    ):
        paths[path] = {
            "get": _prom_op(summary, params, required, post=False),
            "post": _prom_op(summary, params, required, post=True),
        }
    values = _prom_op("Values of one label", listing, post=False)
    values["parameters"].insert(0, {"name": "name", "in": "path", "required": True, "schema": STRING})
    paths["/api/v1/label/{name}/values"] = {"get": values}
    for path, summary in (
        ("/api/v1/metadata", "Metric metadata (empty)"),
        ("/api/v1/status/buildinfo", "Build information (Prometheus-compatible version)"),
        ("/api/v1/rules", "Recording and alerting rules (none)"),
        ("/api/v1/alerts", "Active alerts (none)"),
    ):
        paths[path] = {"get": _prom_op(summary, (), post=False)}
    return paths
