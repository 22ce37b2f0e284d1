"""What the CLI exits with: one code per kind of HTTP answer, and the gateway's own message.

=====  =====================================================================
code   meaning
=====  =====================================================================
0      success
1      unexpected failure (a bug, a malformed answer)
2      wrong usage (unknown option, bad argument: typer's own)
3      not authenticated: no token configured, or HTTP 401
4      forbidden: HTTP 403 (the token lacks the scope, e.g. ``admin``)
5      not found: HTTP 404 (also a gateway without the route, e.g. no PromQL yet)
6      refused request: HTTP 400, 409, 413, 422 (the message names the field)
7      rate limited: HTTP 429 still answered after every retry
8      unavailable: HTTP 5xx still answered after every retry, or the gateway unreachable
9      partial write: some points were rejected (the others are stored)
130    interrupted (Ctrl-C); ``write`` resumes where it stopped
=====  =====================================================================
"""

from __future__ import annotations

from typing import Any

OK = 0
UNEXPECTED = 1
USAGE = 2
UNAUTHENTICATED = 3
FORBIDDEN = 4
NOT_FOUND = 5
REFUSED = 6
RATE_LIMITED = 7
UNAVAILABLE = 8
PARTIAL = 9
INTERRUPTED = 130

_BY_STATUS = {401: UNAUTHENTICATED, 403: FORBIDDEN, 404: NOT_FOUND, 429: RATE_LIMITED}


def exit_code_for_status(status: int) -> int:
    """The exit code for an HTTP status that is not a success."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status >= 500:
        return UNAVAILABLE
    if status >= 400:
        return REFUSED
    return UNEXPECTED


class CliError(Exception):
    """A failure to report in one line, with the exit code it maps to."""

    def __init__(self, message: str, exit_code: int = UNEXPECTED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class HttpFailure(CliError):
    """The gateway answered with an error status; ``message`` is the gateway's own."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}", exit_code_for_status(status))
        self.status = status
        self.code = code
        self.details = details or {}
