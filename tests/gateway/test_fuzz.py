"""Fuzz the HTTP API from its own OpenAPI document with schemathesis (bounded): no 5xx, no crash,
no hang, and answers that conform to the document."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

ST = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "st"
CONFIG = """
[[operations]]
include-path = "/api/v2/write"
checks.positive_data_acceptance.enabled = false

# PromQL and Prometheus's time/duration syntax are not expressible as JSON Schema: a schema-valid
# string may still be bad_data (400), and a POST without a body is a request without parameters,
# as in Prometheus
[[operations]]
include-path-regex = "^/api/v1/"
checks.positive_data_acceptance.enabled = false
checks.negative_data_rejection.enabled = false
[[operations]]
include-path = "/write"
checks.positive_data_acceptance.enabled = false

[[operations]]
include-path = "/otlp/v1/metrics"
checks.positive_data_acceptance.enabled = false

# snappy protobuf bodies cannot be generated; tests/gateway/test_push_routes.py sends bad ones
[[operations]]
include-path = "/api/v1/write"
enabled = false
"""


@pytest.fixture(scope="module")
def fuzz_target(served_factory):
    return served_factory(TSMESH_GATEWAY_RATE_LIMITS="false", TSMESH_GATEWAY_DEADLINE_SECONDS="2")


async def test_schemathesis_finds_no_failure(fuzz_target, tmp_path: Path) -> None:
    token = fuzz_target.mesh.mint.token("t-fuzz", "read write admin", ttl=3600)
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    st = ST
    proc = await asyncio.create_subprocess_exec(
        str(st),
        "--config-file",
        str(config),
        "run",
        f"{fuzz_target.http}/openapi.json",
        "--max-examples",
        "10",
        "--header",
        f"Authorization: Bearer {token}",
        "--request-timeout",
        "5",
        "--seed",
        "7",
        "--generation-database",
        ":memory:",
        "--workers",
        "1",  # CPython 3.11's ast.parse is not thread-safe (hypothesis' lambda reprs): 2 workers crashed at random
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    output, _ = await asyncio.wait_for(proc.communicate(), 110)
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "Server error" not in text
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{fuzz_target.http}/healthz")).status_code == 200
