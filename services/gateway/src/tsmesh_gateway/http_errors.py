"""The one mapping from gRPC status codes (and :mod:`tsmesh_common.errors`) to HTTP responses.

Every error body is JSON: ``{"code", "message", "details", "request_id"}``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import grpc
import orjson

from tsmesh_common.context import request_id_var
from tsmesh_common.errors import InvalidArgument, ResourceExhausted, TsmeshError

log = logging.getLogger(__name__)

STATUS_BY_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 503,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.UNIMPLEMENTED: 501,
}


@dataclass
class HttpError(Exception):
    """An error response ready to send: status, JSON body and extra headers."""

    status: int
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return orjson.dumps(
            {"code": self.code, "message": self.message, "details": self.details, "request_id": request_id_var.get()}
        )


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status for a gRPC status code (500 for anything unexpected)."""
    return STATUS_BY_CODE.get(code, 500)


def to_http_error(exc: BaseException) -> HttpError:
    """Map any exception (upstream gRPC error, local tsmesh error, anything else) to an HTTP error."""
    if isinstance(exc, HttpError):
        return exc
    if isinstance(exc, TsmeshError):
        return _from_status(exc.code, exc.message, exc.trailing_metadata(), exc)
    if isinstance(exc, grpc.aio.AioRpcError):
        trailing = _metadata_pairs(exc.trailing_metadata())
        message = exc.details() or exc.code().name.lower()
        if exc.code() == grpc.StatusCode.UNAVAILABLE and message.startswith("failed to connect"):
            message = "upstream unavailable"
        return _from_status(exc.code(), message, trailing, None)
    log.error("unhandled error", exc_info=exc)
    return HttpError(500, "INTERNAL", "internal error")


def _from_status(
    code: grpc.StatusCode, message: str, trailing: tuple[tuple[str, str], ...], exc: TsmeshError | None
) -> HttpError:
    details: dict[str, Any] = {}
    headers: dict[str, str] = {}
    meta = dict(trailing)
    if isinstance(exc, InvalidArgument):
        details["field"] = exc.field
    elif "tsmesh-field" in meta:
        details["field"] = meta["tsmesh-field"]
    if isinstance(exc, ResourceExhausted):
        details["limit"] = exc.limit
        retry = exc.retry_after_seconds
    else:
        if "tsmesh-limit" in meta:
            details["limit"] = meta["tsmesh-limit"]
        try:
            retry = float(meta["retry-after"]) if "retry-after" in meta else None
        except ValueError:
            retry = None
    if retry is not None and math.isfinite(retry):
        details["retry_after_seconds"] = round(retry, 3)
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    elif code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        headers["Retry-After"] = "1"
    return HttpError(http_status(code), code.name, message, details, headers)


def _metadata_pairs(metadata: Any) -> tuple[tuple[str, str], ...]:
    pairs: list[tuple[str, str]] = []
    for item in tuple(metadata or ()):
        key, value = item[0], item[1]
        pairs.append((str(key), value if isinstance(value, str) else bytes(value).decode(errors="replace")))
    return tuple(pairs)
