"""Reading request bodies safely: size cap, slow-body timeout, gzip with a bomb guard, JSON depth."""

from __future__ import annotations

import asyncio
import time
import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from tsmesh_gateway.http_errors import HttpError

JSON_TYPE = "application/json"


def too_large(limit: int) -> HttpError:
    return HttpError(413, "INVALID_ARGUMENT", f"request body larger than {limit} bytes", {"field": "body"})


class BodyWatchdog:
    """Bounds how long a request body may take to arrive, with ONE timer task per worker instead
    of a timer per request: a sweeper cancels reads that outlive their deadline (answered 408)."""

    def __init__(self, interval: float = 0.25) -> None:
        self._interval = interval
        self._deadlines: dict[asyncio.Task[object], float] = {}
        self._expired: set[asyncio.Task[object]] = set()

    async def run(self) -> None:
        """Sweep until cancelled (started by the application's lifespan)."""
        while True:
            await asyncio.sleep(self._interval)
            now = time.monotonic()
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now:
                    del self._deadlines[task]
                    self._expired.add(task)
                    task.cancel()

    async def read(self, receive: Receive, timeout: float, max_bytes: int) -> list[bytes]:
        """The body chunks, within ``timeout`` seconds and ``max_bytes`` bytes."""
        task = asyncio.current_task()
        assert task is not None
        self._deadlines[task] = time.monotonic() + timeout
        chunks: list[bytes] = []
        size = 0
        try:
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    raise HttpError(400, "INVALID_ARGUMENT", "client disconnected", {"field": "body"})
                chunk = message.get("body", b"")
                if chunk:
                    size += len(chunk)
                    if size > max_bytes:
                        raise too_large(max_bytes)
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks
        except asyncio.CancelledError:
            if task in self._expired:
                self._expired.discard(task)
                task.uncancel()
                raise HttpError(
                    408, "DEADLINE_EXCEEDED", "request body not received in time", {"field": "body"}
                ) from None
            raise
        finally:
            self._deadlines.pop(task, None)


async def read_body(request: Request, *, max_bytes: int, timeout: float, watchdog: BodyWatchdog) -> bytes:
    """The (decompressed) body; 413 beyond ``max_bytes``, 408 when the client sends too slowly."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, "INVALID_ARGUMENT", "bad Content-Length", {"field": "content-length"})
        if int(declared) > max_bytes:
            raise too_large(max_bytes)
    chunks = await watchdog.read(request.receive, timeout, max_bytes)
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = request.headers.get("content-encoding")
    if encoding is None:
        return body
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding in ("gzip", "x-gzip"):
        return gunzip(body, max_bytes)
    raise HttpError(
        415, "INVALID_ARGUMENT", f"unsupported Content-Encoding {encoding!r}", {"field": "content-encoding"}
    )


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """Decompress a gzip body, refusing anything that inflates beyond ``max_bytes``."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error:
        raise HttpError(400, "INVALID_ARGUMENT", "body is not valid gzip", {"field": "body"}) from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise too_large(max_bytes)
    if not inflater.eof:
        raise HttpError(400, "INVALID_ARGUMENT", "truncated gzip body", {"field": "body"})
    return out


def parse_json(body: bytes, max_depth: int) -> Any:
    """Parse a JSON document no deeper than ``max_depth`` containers."""
    if not body:
        raise HttpError(400, "INVALID_ARGUMENT", "a JSON body is required", {"field": "body"})
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise HttpError(400, "INVALID_ARGUMENT", f"invalid JSON: {exc.msg}", {"field": "body"}) from None
    if json_depth(value, max_depth) > max_depth:
        raise HttpError(400, "INVALID_ARGUMENT", f"JSON nested deeper than {max_depth}", {"field": "body"})
    return value


def json_depth(value: Any, limit: int) -> int:
    """Container depth of a parsed document, stopping once it exceeds ``limit``."""
    depth = 0
    level = [value]
    while level:
        containers: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                containers.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                containers.extend(v for v in item if isinstance(v, dict | list))
        if not any(isinstance(item, dict | list) for item in level):
            break
        depth += 1
        if depth > limit:
            return depth
        level = containers
    return depth


async def read_json(request: Request, *, max_bytes: int, timeout: float, max_depth: int, watchdog: BodyWatchdog) -> Any:
    """Read and parse a JSON request body under every limit."""
    content_type = request.headers.get("content-type", JSON_TYPE).split(";")[0].strip().lower()
    if content_type not in (JSON_TYPE, "") and not content_type.endswith("+json"):
        raise HttpError(415, "INVALID_ARGUMENT", "Content-Type must be application/json", {"field": "content-type"})
    return parse_json(await read_body(request, max_bytes=max_bytes, timeout=timeout, watchdog=watchdog), max_depth)


class JSONResponse(Response):
    """A JSON response rendered by orjson."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_object(value: Any, field: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HttpError(400, "INVALID_ARGUMENT", f"{field}: must be a JSON object", {"field": field})
    return value
