"""``FastQueries``, the pure-ASGI path of the cached query routes, driven with raw ASGI messages: what
it owns and what it leaves to Starlette, the headers it writes, and its errors. The collaborators
it calls (authorization, the client address, the body watchdog) are stand-ins: the routes behind it
are tested end to end in test_http.py and test_querycache.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from tsmesh_common.context import Principal
from tsmesh_common.errors import Unauthenticated
from tsmesh_gateway.bodies import BodyWatchdog
from tsmesh_gateway.deps import Caller
from tsmesh_gateway.fastpath import FastQueries

PRINCIPAL = Principal("t1", "user", frozenset({"read"}), None, "tok", "api_token")


class StandInDeps:
    """What FastQueries asks of ``Deps``: authorization of a header, the client address, the body limits."""

    def __init__(self, max_body_bytes: int = 1024) -> None:
        self.cfg = SimpleNamespace(max_body_bytes=max_body_bytes, body_timeout_seconds=5.0)
        self.watchdog = BodyWatchdog()
        self.authorized: list[tuple[str | None, str, str, str | None]] = []

    def client_address(self, scope: dict[str, Any]) -> str:
        return str(scope["client"][0])

    async def authorize_header(self, header: str | None, address: str, route_class: str, scope: str | None) -> Caller:
        self.authorized.append((header, address, route_class, scope))
        if header != "Bearer good":
            raise Unauthenticated("missing or invalid token")
        return Caller(PRINCIPAL, header, None)


class Answer:
    """A cached route's handler: records its calls, answers ``body``."""

    def __init__(self, body: bytes = b'{"series":[]}', gzipped: bool = False, outcome: str = "miss") -> None:
        self.calls: list[tuple[Caller, bytes, bool]] = []
        self.result = (body, gzipped, outcome)

    async def __call__(self, caller: Caller, raw: bytes, gzip_ok: bool) -> tuple[bytes, bool, str]:
        self.calls.append((caller, raw, gzip_ok))
        return self.result


def scope(method: str, path: str, headers: dict[str, str], query: bytes = b"", scheme: str = "http") -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "scheme": scheme,
        "query_string": query,
        "client": ("10.0.0.7", 5555),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def serve(
    fast: FastQueries, request: dict[str, Any], body: bytes = b""
) -> tuple[bool, int, dict[bytes, bytes], bytes]:
    sent: list[dict[str, Any]] = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    served = await fast.serve(request, receive, send)
    if not served:
        assert sent == []
        return False, 0, {}, b""
    start, payload = sent
    return True, start["status"], dict(start["headers"]), payload["body"]


def fast_queries(answer: Answer, *, cors: bool = False, deps: StandInDeps | None = None) -> FastQueries:
    handlers = {("POST", "/v1/query/range"): answer, ("GET", "/v1/query/range"): answer}
    return FastQueries(deps or StandInDeps(), handlers, cors=cors)  # type: ignore[arg-type]


async def test_a_cached_route_is_answered_with_the_edge_headers() -> None:
    answer, deps = Answer(outcome="hit"), StandInDeps()
    served, status, headers, body = await serve(
        fast_queries(answer, deps=deps),
        scope("POST", "/v1/query/range", {"Authorization": "Bearer good", "X-Request-ID": "req-1"}),
        b'{"metric":"m"}',
    )
    assert (served, status, body) == (True, 200, b'{"series":[]}')
    assert deps.authorized == [("Bearer good", "10.0.0.7", "query", "read")]
    assert answer.calls == [(Caller(PRINCIPAL, "Bearer good", None), b'{"metric":"m"}', False)]
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == b"%d" % len(body)
    assert headers[b"x-request-id"] == b"req-1"
    assert headers[b"x-cache"] == b"hit"
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert b"strict-transport-security" not in headers and b"content-encoding" not in headers


async def test_get_reads_the_query_string_and_https_adds_hsts() -> None:
    answer = Answer()
    request = scope("GET", "/v1/query/range", {"Authorization": "Bearer good"}, b"metric=m", scheme="https")
    served, status, headers, _ = await serve(fast_queries(answer), request, b"ignored")
    assert (served, status) == (True, 200)
    assert answer.calls[0][1] == b"metric=m"
    assert b"strict-transport-security" in headers
    assert len(headers[b"x-request-id"]) == 32  # a fresh id


async def test_a_gzipped_answer_says_so_when_the_client_accepts_it() -> None:
    answer = Answer(body=b"\x1f\x8b...", gzipped=True)
    request = scope("POST", "/v1/query/range", {"Authorization": "Bearer good", "Accept-Encoding": "gzip, br"})
    _, status, headers, _ = await serve(fast_queries(answer), request, b"{}")
    assert status == 200 and answer.calls[0][2] is True
    assert (headers[b"content-encoding"], headers[b"vary"]) == (b"gzip", b"Accept-Encoding")


@pytest.mark.parametrize(
    ("method", "path", "headers", "cors"),
    [
        ("POST", "/v1/write", {}, False),  # not a cached route
        ("DELETE", "/v1/query/range", {}, False),
        ("POST", "/v1/query/range", {"Content-Encoding": "gzip"}, False),  # Starlette decompresses
        ("POST", "/v1/query/range", {"Origin": "https://app.example"}, True),  # CORS is Starlette's
    ],
)
async def test_what_it_does_not_own_is_left_untouched(
    method: str, path: str, headers: dict[str, str], cors: bool
) -> None:
    answer = Answer()
    served, *_ = await serve(fast_queries(answer, cors=cors), scope(method, path, headers), b"{}")
    assert not served and answer.calls == []


async def test_an_origin_without_cors_and_an_identity_encoding_are_served() -> None:
    headers = {"Authorization": "Bearer good", "Origin": "https://x", "Content-Encoding": "identity"}
    served, status, *_ = await serve(fast_queries(Answer()), scope("POST", "/v1/query/range", headers), b"{}")
    assert (served, status) == (True, 200)


async def test_a_refused_token_is_the_json_error_with_the_request_id() -> None:
    answer = Answer()
    request = scope("POST", "/v1/query/range", {"Authorization": "Bearer bad", "X-Request-ID": "req-2"})
    served, status, headers, body = await serve(fast_queries(answer), request, b"{}")
    assert (served, status) == (True, 401) and answer.calls == []
    assert headers[b"x-request-id"] == b"req-2" and headers[b"content-type"] == b"application/json"
    error = orjson.loads(body)
    assert (error["code"], error["request_id"]) == ("UNAUTHENTICATED", "req-2")


@pytest.mark.parametrize(("declared", "status", "field"), [("abc", 400, "content-length"), ("2048", 413, None)])
async def test_a_bad_or_too_large_content_length_is_refused_before_reading(
    declared: str, status: int, field: str | None
) -> None:
    answer = Answer()
    headers = {"Authorization": "Bearer good", "Content-Length": declared}
    _, got, _, body = await serve(fast_queries(answer), scope("POST", "/v1/query/range", headers), b"{}")
    assert got == status and answer.calls == []
    if field is not None:
        assert orjson.loads(body)["details"]["field"] == field


async def test_a_body_beyond_the_limit_is_refused_while_reading() -> None:
    answer = Answer()
    request = scope("POST", "/v1/query/range", {"Authorization": "Bearer good"})
    _, status, *_ = await serve(fast_queries(answer, deps=StandInDeps(max_body_bytes=8)), request, b"x" * 9)
    assert status == 413 and answer.calls == []
