"""``SingleFlight``: identical concurrent calls share one computation, distinct keys do not, and a
cancellation stays with whoever was cancelled (pure asyncio, no service)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from tsmesh_query.singleflight import SingleFlight


class Gate:
    """A computation that counts its runs and finishes when released."""

    def __init__(self, result: str = "r") -> None:
        self.runs = 0
        self.release = asyncio.Event()
        self.result = result

    async def __call__(self) -> str:
        self.runs += 1
        await self.release.wait()
        return self.result


def shared() -> float:
    return REGISTRY.get_sample_value("tsmesh_query_singleflight_shared_total") or 0.0


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_concurrent_callers_of_one_key_share_one_computation() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Gate()
    shared_before = shared()
    callers = [asyncio.create_task(flight.do("k", work)) for _ in range(3)]
    await settle()
    work.release.set()
    assert await asyncio.gather(*callers) == ["r", "r", "r"]
    assert work.runs == 1
    assert shared() - shared_before == 2


async def test_distinct_keys_and_later_calls_compute_again() -> None:
    flight: SingleFlight[str] = SingleFlight()
    a, b = Gate("a"), Gate("b")
    a.release.set()
    b.release.set()
    assert await asyncio.gather(flight.do("a", a), flight.do("b", b)) == ["a", "b"]
    assert await flight.do("a", a) == "a"  # the first call finished: nothing is cached
    assert (a.runs, b.runs) == (2, 1)


async def test_an_error_reaches_every_waiter_and_is_not_kept() -> None:
    flight: SingleFlight[str] = SingleFlight()
    release = asyncio.Event()

    async def failing() -> str:
        await release.wait()
        raise ValueError("boom")

    callers = [asyncio.create_task(flight.do("k", failing)) for _ in range(2)]
    await settle()
    release.set()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(o) for o in outcomes] == [ValueError, ValueError]
    ok = Gate()
    ok.release.set()
    assert await flight.do("k", ok) == "r"


async def test_a_cancelled_waiter_does_not_cancel_the_shared_work() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Gate()
    leader = asyncio.create_task(flight.do("k", work))
    await settle()
    waiter = asyncio.create_task(flight.do("k", work))
    await settle()
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    work.release.set()
    assert await leader == "r" and work.runs == 1


async def test_when_the_leader_is_cancelled_a_waiter_computes_itself() -> None:
    flight: SingleFlight[str] = SingleFlight()
    work = Gate()
    leader = asyncio.create_task(flight.do("k", work))
    await settle()
    waiter = asyncio.create_task(flight.do("k", work))
    await settle()
    leader.cancel()  # its own deadline, say
    await settle()
    work.release.set()
    assert await waiter == "r"
    assert work.runs == 2
    assert leader.cancelled()
