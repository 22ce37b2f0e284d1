"""Login throttle under concurrency (ADR 0105): attempts are reserved before the password check, the
account is counted under its canonical name, and budgets are per (account, address), per account and
per address, so an attacker elsewhere cannot lock an account's owner out."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from tsmesh.v1 import auth_pb2

from tsmesh_common.identity import canonical_login_name, login_identity

from .conftest import GATEWAY, AuthServer, Database, auth_environ

WRONG = "wrong-password-123"
PAIR_BUDGET = 5
ACCOUNT_BUDGET = 12
ADDRESS_BUDGET = 30
SOPHOS = "\u03c3\u03bf\u03c6\u03bf\u03c2"  # ends in a final sigma


def fullwidth(text: str) -> str:
    """``text`` with ASCII letters, digits and punctuation in their full-width forms."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.fixture
async def auth_env(migrated: Database) -> dict[str, str]:
    # a base delay far longer than any test, so no attempt is let through by the backoff on a slow box
    return auth_environ(
        migrated,
        TSMESH_AUTH_LOGIN_FREE_ATTEMPTS_ACCOUNT_ADDRESS=str(PAIR_BUDGET),
        TSMESH_AUTH_LOGIN_FREE_ATTEMPTS_ACCOUNT=str(ACCOUNT_BUDGET),
        TSMESH_AUTH_LOGIN_FREE_ATTEMPTS_ADDRESS=str(ADDRESS_BUDGET),
        TSMESH_AUTH_LOGIN_BASE_DELAY_SECONDS="600",
    )


async def login(server: AuthServer, tenant: str, email: str, password: str, address: str) -> grpc.StatusCode:
    try:
        await server.stub.Login(
            auth_pb2.LoginRequest(tenant=tenant, email=email, password=password),
            metadata=(*GATEWAY.metadata(), ("x-client-address", address)),
            timeout=30,
        )
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            assert float(dict(exc.trailing_metadata())["retry-after"]) > 0
        return exc.code()
    return grpc.StatusCode.OK


class GatedHasher:
    """Holds every wrong-password check until released, so parallel guesses are all in flight at once."""

    def __init__(self, verify: Callable[[str, str | None], Awaitable[bool]], right: str) -> None:
        self._verify = verify
        self._right = right
        self.checked: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, password: str, stored: str | None) -> bool:
        self.checked.append(password)
        if password != self._right:
            await self.release.wait()
        return await self._verify(password, stored)


async def settle(tasks: list[asyncio.Task[Any]], gate: GatedHasher, n: int) -> None:
    """Wait until each of ``n`` guesses is either answered or held in the password check."""
    async with asyncio.timeout(60):
        while sum(t.done() for t in tasks) + len(gate.checked) < n:
            await asyncio.sleep(0.01)


@pytest.fixture
def gate(auth_server: AuthServer, monkeypatch: pytest.MonkeyPatch) -> GatedHasher:
    hasher = auth_server.parts.hasher
    gated = GatedHasher(hasher.verify, auth_server.password)
    monkeypatch.setattr(hasher, "verify", gated)
    return gated


async def test_parallel_wrong_passwords_check_at_most_the_budget(auth_server: AuthServer, gate: GatedHasher) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    tasks = [asyncio.create_task(login(auth_server, name, email, WRONG, auth_server.address)) for _ in range(40)]
    await settle(tasks, gate, 40)
    gate.release.set()
    codes = await asyncio.gather(*tasks)
    assert len(gate.checked) == PAIR_BUDGET
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == PAIR_BUDGET
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 40 - PAIR_BUDGET


async def test_right_password_is_refused_while_the_budget_is_spent_by_guesses_in_flight(
    auth_server: AuthServer, gate: GatedHasher
) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    wrong = [asyncio.create_task(login(auth_server, name, email, WRONG, auth_server.address)) for _ in range(29)]
    await settle(wrong, gate, 29)
    right = await login(auth_server, name, email, auth_server.password, auth_server.address)
    gate.release.set()
    codes = await asyncio.gather(*wrong)
    assert right == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert codes.count(grpc.StatusCode.UNAUTHENTICATED) == PAIR_BUDGET
    assert len(gate.checked) == PAIR_BUDGET


async def test_spellings_of_one_address_share_one_budget(auth_server: AuthServer) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name, email="straße.bob@example.com")
    variants = [
        f"  {email} ",
        "STRASSE.BOB@EXAMPLE.COM",
        fullwidth("strasse.bob@example.com"),
        "Straße.Bob@Example.Com",
        "strasse.bob@example.com\t",
    ]
    assert len({login_identity(f" {name.upper()}", v) for v in variants}) == 1
    for variant in variants:
        assert await login(auth_server, name, variant, WRONG, auth_server.address) == grpc.StatusCode.UNAUTHENTICATED
    assert await login(auth_server, name, email, auth_server.password, auth_server.address) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def test_canonical_login_name_folds_case_width_and_spaces() -> None:
    assert canonical_login_name(f" {fullwidth('Bob')}@Example.COM\n") == "bob@example.com"
    assert (
        canonical_login_name(SOPHOS.upper())
        == canonical_login_name(SOPHOS)
        == canonical_login_name(SOPHOS[:-1] + "\u03c3")
    )
    assert canonical_login_name("\ufb01") == "fi"  # the ligature
    assert login_identity(" Acme ", "a@b.io") == login_identity("ACME", " A@B.IO") == "login:acme:a@b.io"


async def test_attacker_address_does_not_lock_the_owner_out_from_elsewhere(auth_server: AuthServer) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    attacker, owner = auth_server.address, f"{auth_server.address}-owner"
    for _ in range(PAIR_BUDGET):
        assert await login(auth_server, name, email, WRONG, attacker) == grpc.StatusCode.UNAUTHENTICATED
    assert await login(auth_server, name, email, auth_server.password, attacker) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert await login(auth_server, name, email, auth_server.password, owner) == grpc.StatusCode.OK


async def test_account_budget_bounds_guesses_from_many_addresses(auth_server: AuthServer) -> None:
    name, _ = await auth_server.tenant()
    email = await auth_server.user(name)
    for i in range(ACCOUNT_BUDGET):
        address = f"{auth_server.address}-{i}"
        assert await login(auth_server, name, email, WRONG, address) == grpc.StatusCode.UNAUTHENTICATED
    fresh = f"{auth_server.address}-fresh"
    assert await login(auth_server, name, email, auth_server.password, fresh) == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_spraying_from_one_address_is_limited_but_successes_cost_nothing(auth_server: AuthServer) -> None:
    name, _ = await auth_server.tenant()
    address = auth_server.address
    for i in range(ADDRESS_BUDGET - 1):
        assert await login(auth_server, name, f"spray{i}@example.com", WRONG, address) == (
            grpc.StatusCode.UNAUTHENTICATED
        )
    for _ in range(3):  # users behind the same proxy still sign in, and do not use up its budget
        assert await login(auth_server, name, await auth_server.user(name), auth_server.password, address) == (
            grpc.StatusCode.OK
        )
    assert await login(auth_server, name, "last@example.com", WRONG, address) == grpc.StatusCode.UNAUTHENTICATED
    assert await login(auth_server, name, "fresh@example.com", WRONG, address) == grpc.StatusCode.RESOURCE_EXHAUSTED
