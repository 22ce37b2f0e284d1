"""The gateway over HTTP: bearer token, retries of 429/503 honouring Retry-After, errors as :class:`HttpFailure`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from tsmesh_cli.errors import UNAVAILABLE, CliError, HttpFailure
from tsmesh_cli.profiles import Target

RETRIED = frozenset({429, 502, 503, 504})
MAX_WAIT_S = 30.0


def retry_after(response: httpx.Response, attempt: int) -> float:
    """Seconds to wait before the next attempt: the ``Retry-After`` header (seconds), else a backoff."""
    header = str(response.headers.get("retry-after", ""))
    try:
        seconds = float(header)
    except ValueError:
        return min(0.2 * 2.0**attempt, MAX_WAIT_S)
    return min(max(seconds, 0.0), MAX_WAIT_S)


def failure(response: httpx.Response) -> HttpFailure:
    """The gateway's error body (``code``, ``message``, ``details``) as an exception."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        details = body.get("details")
        return HttpFailure(
            response.status_code,
            str(body.get("code", "")),
            body["message"],
            details if isinstance(details, dict) else None,
        )
    return HttpFailure(response.status_code, response.reason_phrase, response.text[:200] or "(no body)")


class Gateway:
    """One HTTP client for one gateway; ``on_retry`` hears of each wait (for a progress line)."""

    def __init__(
        self,
        target: Target,
        *,
        timeout: float = 60.0,
        attempts: int = 8,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[int, float], None] | None = None,
    ) -> None:
        headers = {"User-Agent": "tsmesh-cli/0.1"}
        if target.token:
            headers["Authorization"] = f"Bearer {target.token}"
        self.target = target
        self._http = httpx.Client(base_url=target.url, headers=headers, timeout=timeout, transport=transport)
        self._attempts = max(1, attempts)
        self._sleep = sleep
        self.on_retry = on_retry

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send, retrying 429/502/503/504 and connection failures; a final error raises."""
        for attempt in range(self._attempts):
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt + 1 >= self._attempts:
                    raise CliError(f"cannot reach the gateway at {self.target.url}: {exc}", UNAVAILABLE) from None
                wait = min(0.2 * 2.0**attempt, MAX_WAIT_S)
            else:
                if response.status_code < 400:
                    return response
                if response.status_code not in RETRIED or attempt + 1 >= self._attempts:
                    raise failure(response)
                wait = retry_after(response, attempt)
            if self.on_retry is not None:
                self.on_retry(attempt + 1, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send and decode the JSON answer (``None`` for an empty one)."""
        response = self.send(method, path, **kwargs)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise CliError(f"{method} {path}: the answer is not JSON") from None

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed answer (not retried once bytes flow); an error status raises."""
        with self._http.stream(method, path, **kwargs) as response:
            if response.status_code >= 400:
                response.read()
                raise failure(response)
            yield response
