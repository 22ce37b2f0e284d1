"""The one exception hierarchy of tsmesh, and its mapping to gRPC status codes.

    TsmeshError
    ├── InvalidArgument      INVALID_ARGUMENT   (names the field at fault)
    ├── Unauthenticated      UNAUTHENTICATED
    ├── PermissionDenied     PERMISSION_DENIED
    ├── NotFound             NOT_FOUND
    ├── AlreadyExists        ALREADY_EXISTS
    ├── FailedPrecondition   FAILED_PRECONDITION
    ├── ResourceExhausted    RESOURCE_EXHAUSTED (names the limit, carries a retry hint)
    ├── Unavailable          UNAVAILABLE        (a dependency is down or a breaker is open)
    └── DeadlineExceeded     DEADLINE_EXCEEDED

Anything else escaping a handler becomes INTERNAL with a generic message (details are logged).
"""

from __future__ import annotations

import grpc


class TsmeshError(Exception):
    """Base of every error a service deliberately returns to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()


class InvalidArgument(TsmeshError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("tsmesh-field", self.field),)


class Unauthenticated(TsmeshError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(TsmeshError):
    code = grpc.StatusCode.PERMISSION_DENIED


class NotFound(TsmeshError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(TsmeshError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(TsmeshError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(TsmeshError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, limit: str, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(f"{limit}: {message}")
        self.limit = limit
        self.retry_after_seconds = retry_after_seconds

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        md: tuple[tuple[str, str], ...] = (("tsmesh-limit", self.limit),)
        if self.retry_after_seconds is not None:
            md += (("retry-after", f"{max(self.retry_after_seconds, 0.0):.3f}"),)
        return md


class Unavailable(TsmeshError):
    code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(TsmeshError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
