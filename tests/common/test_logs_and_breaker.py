"""JSON logs carry ids and never secrets; the circuit breaker opens, fails fast and recovers."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tsmesh_common.breaker import CircuitBreaker
from tsmesh_common.context import request_id_var
from tsmesh_common.errors import Unavailable
from tsmesh_common.logs import JsonFormatter, redact


def test_json_line_has_request_id_and_redacts_secrets() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("svc"))
    logger = logging.getLogger("tsmesh.test.logs")
    logger.addHandler(handler)
    logger.propagate = False
    token = request_id_var.set("req-42")
    try:
        logger.warning(
            "login for %s with password=hunter22 and Bearer eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.c2ln",
            "alice",
            extra={"authorization": "Bearer abc", "api": "tsm_0123456789abcdef_secretsecretsecret"},
        )
    finally:
        request_id_var.reset(token)
        logger.removeHandler(handler)
    line = stream.getvalue()
    entry = json.loads(line)
    assert entry["request_id"] == "req-42"
    assert entry["service"] == "svc" and entry["level"] == "warning"
    assert "alice" in entry["msg"]
    for secret in ("hunter22", "eyJhbGciOiJFZERTQSJ9", "abc", "secretsecretsecret"):
        assert secret not in line
    assert entry["authorization"] == "[REDACTED]"


def test_redact_private_key_block() -> None:
    marker = "PRIVATE KEY-----"  # assembled, so the test file holds no key-looking block
    text = f"key: -----BEGIN {marker}\nMC4CAQAwBQYDK2VwBCIEIA\n-----END {marker} done"
    assert "MC4CAQ" not in redact(text)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_breaker_opens_fails_fast_then_recovers() -> None:
    clock = Clock()
    breaker = CircuitBreaker("db-test", failures=(ConnectionError,), failure_threshold=2, reset_seconds=5, clock=clock)
    calls = 0

    async def failing() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    async def ok() -> str:
        nonlocal calls
        calls += 1
        return "ok"

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(failing)
    assert breaker.is_open
    with pytest.raises(Unavailable, match="circuit open"):
        await breaker.call(ok)
    assert calls == 2  # refused without calling
    clock.now = 6.0  # half-open: one trial goes through
    assert await breaker.call(ok) == "ok"
    assert not breaker.is_open


async def test_breaker_reopens_when_the_trial_fails() -> None:
    clock = Clock()
    breaker = CircuitBreaker("db-test2", failures=(ConnectionError,), failure_threshold=1, reset_seconds=5, clock=clock)

    async def failing() -> None:
        raise ConnectionError

    with pytest.raises(ConnectionError):
        await breaker.call(failing)
    clock.now = 6.0
    with pytest.raises(ConnectionError):
        await breaker.call(failing)
    assert breaker.is_open
