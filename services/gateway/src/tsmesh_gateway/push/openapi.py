"""The push routes in the OpenAPI document."""

from __future__ import annotations

from typing import Any

BINARY = {"type": "string", "format": "binary"}


def push_paths(errors: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI path items of the push routes; ``errors`` are the shared error responses."""
    retry = {"429": {"description": "Overloaded: retry later"}, "503": {"description": "Unavailable: retry later"}}
    remote_write = {
        "summary": "Prometheus remote_write 1.0 or 2.0 (snappy protobuf; version by Content-Type)",
        "parameters": [
            {"name": "Content-Encoding", "in": "header", "required": True, "schema": {"enum": ["snappy"]}},
        ],
        "requestBody": {"required": True, "content": {"application/x-protobuf": {"schema": BINARY}}},
        "responses": {**errors, **retry, "204": {"description": "Stored"}},
    }
    otlp = {
        "summary": "OTLP/HTTP metrics export (protobuf or JSON, optionally gzip)",
        "requestBody": {
            "required": True,
            "content": {
                "application/x-protobuf": {"schema": BINARY},
                "application/json": {"schema": {"type": "object"}},
            },
        },
        "responses": {
            **errors,
            **retry,
            "200": {
                "description": "ExportMetricsServiceResponse (partial_success when points were refused)",
                "content": {
                    "application/x-protobuf": {"schema": BINARY},
                    "application/json": {"schema": {"type": "object"}},
                },
            },
        },
    }
    influx_v1 = {
        "summary": "InfluxDB 1.x line protocol write; db (db/rp) becomes the bucket label",
        "parameters": [
            {"name": "db", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
            {"name": "rp", "in": "query", "required": False, "schema": {"type": "string"}},
            {
                "name": "precision",
                "in": "query",
                "required": False,
                "schema": {"enum": ["ns", "n", "us", "u", "ms", "s", "m", "h"]},
            },
        ],
        "requestBody": {"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}},
        "responses": {**errors, **retry, "204": {"description": "Stored"}},
        "security": [{"influxToken": []}, {"bearer": []}],
    }
    return {"/api/v1/write": {"post": remote_write}, "/otlp/v1/metrics": {"post": otlp}, "/write": {"post": influx_v1}}
