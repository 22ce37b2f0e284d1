"""Coalesce identical concurrent calls: the first caller computes, the others await its result."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from tsmesh_query.metrics import SINGLE_FLIGHT_SHARED

T = TypeVar("T")


class SingleFlight(Generic[T]):
    """One in-flight computation per key; a cancelled waiter never cancels the shared work."""

    def __init__(self) -> None:
        self._calls: dict[str, asyncio.Future[T]] = {}

    async def do(self, key: str, fn: Callable[[], Awaitable[T]]) -> T:
        existing = self._calls.get(key)
        if existing is not None:
            SINGLE_FLIGHT_SHARED.inc()
            try:
                return await asyncio.shield(existing)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not existing.cancelled() or (task is not None and task.cancelling()):
                    raise
                # the leader was cancelled (its own deadline), not us: compute ourselves
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._calls[key] = future
        try:
            result = await fn()
        except BaseException as exc:
            if not future.done():
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
                    future.exception()  # mark retrieved: waiters may be none
            raise
        else:
            future.set_result(result)
            return result
        finally:
            if self._calls.get(key) is future:
                del self._calls[key]
