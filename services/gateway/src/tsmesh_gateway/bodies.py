"""Reading request bodies safely: size cap, slow-body timeout, gzip with a bomb guard, JSON depth."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tsmesh_gateway.http_errors import HttpError

JSON_TYPE = "application/json"


def too_large(limit: int) -> HttpError:
    return HttpError(413, "INVALID_ARGUMENT", f"request body larger than {limit} bytes", {"field": "body"})


async def read_body(request: Request, *, max_bytes: int, timeout: float) -> bytes:
    """The (decompressed) body; 413 beyond ``max_bytes``, 408 when the client sends too slowly."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise HttpError(400, "INVALID_ARGUMENT", "bad Content-Length", {"field": "content-length"})
        if int(declared) > max_bytes:
            raise too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise too_large(max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(408, "DEADLINE_EXCEEDED", "request body not received in time", {"field": "body"}) from None
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
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


async def read_json(request: Request, *, max_bytes: int, timeout: float, max_depth: int) -> Any:
    """Read and parse a JSON request body under every limit."""
    content_type = request.headers.get("content-type", JSON_TYPE).split(";")[0].strip().lower()
    if content_type not in (JSON_TYPE, "") and not content_type.endswith("+json"):
        raise HttpError(415, "INVALID_ARGUMENT", "Content-Type must be application/json", {"field": "content-type"})
    return parse_json(await read_body(request, max_bytes=max_bytes, timeout=timeout), max_depth)


class JSONResponse(Response):
    """A JSON response rendered by orjson."""

    media_type = JSON_TYPE

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_object(value: Any, field: str = "body") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HttpError(400, "INVALID_ARGUMENT", f"{field}: must be a JSON object", {"field": field})
    return value
