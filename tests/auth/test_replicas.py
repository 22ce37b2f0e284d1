"""Several auth replicas on one database: one first key, shared revocations, evicted caches."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import grpc
import redis.asyncio as aioredis
from testkit import eventually
from tsmesh.v1 import auth_pb2, auth_pb2_grpc

from tsmesh_auth.app import build
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.db import create_pool
from tsmesh_auth.kek import resolve_kek
from tsmesh_auth.keys import KEYS_LOCK_KEY, insert_key

from .conftest import REDIS_URL, start_server


async def test_replicas_starting_together_create_one_signing_key(auth_env, redis_client) -> None:
    cfg = AuthConfig.from_env(auth_env)
    pool = await create_pool(cfg.database_url, 6)
    try:
        replicas = await asyncio.gather(*(build(cfg, pool, redis_client) for _ in range(3)))
        assert len({r.keyring.signing_key().kid for r in replicas}) == 1
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM auth.signing_keys") == 1
    finally:
        await pool.close()


async def test_a_key_made_while_a_replica_waited_for_the_lock_is_the_one_it_uses(auth_env, redis_client) -> None:
    """The race behind two keys: a replica's key-creating transaction begins, then waits for the lock
    while another replica inserts its key (activating at that one's later start). Once it gets the
    lock, that key must count as active: it made a second key when the check used now()."""
    cfg = AuthConfig.from_env(auth_env)
    pool = await create_pool(cfg.database_url, 6)
    try:
        encryption = await resolve_kek(pool, cfg.kek, cfg.production)
        other = await pool.acquire()
        lock = other.transaction()
        await lock.start()
        await other.execute("SELECT pg_advisory_xact_lock($1)", KEYS_LOCK_KEY)
        waiting = asyncio.create_task(build(cfg, pool, redis_client))

        async def blocked() -> bool:
            async with pool.acquire() as conn:
                return bool(
                    await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                )

        await eventually(blocked)  # its transaction has begun and waits for the lock
        made = await insert_key(other, encryption, await other.fetchval("SELECT clock_timestamp()"), timedelta(days=1))
        await lock.commit()
        await pool.release(other)
        replica = await asyncio.wait_for(waiting, 30)
        assert replica.keyring.signing_key().kid == made
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM auth.signing_keys") == 1
    finally:
        await pool.close()


async def test_revocation_on_one_replica_evicts_the_cache_of_another(auth_server, auth_env, redis_client) -> None:
    cfg = AuthConfig.from_env(auth_env)
    pool = await create_pool(cfg.database_url, 3)
    pubsub = aioredis.Redis.from_url(REDIS_URL)
    _, app, port = await start_server(cfg, pool, redis_client, pubsub)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        other = auth_pb2_grpc.AuthServiceStub(channel)
        _, _, admin = await auth_server.admin_token()
        created = await auth_server.stub.CreateApiToken(
            auth_pb2.CreateApiTokenRequest(name="ci", scopes=["read"]), metadata=auth_server.md(admin)
        )
        request = auth_pb2.IntrospectRequest(token=created.secret)
        assert (await other.Introspect(request)).active  # now cached on the second replica
        await asyncio.sleep(0.3)  # both replicas subscribed to the revocation feed
        await auth_server.stub.RevokeApiToken(
            auth_pb2.RevokeApiTokenRequest(id=created.token.id), metadata=auth_server.md(admin)
        )
        deadline = time.monotonic() + 1.0
        while (await other.Introspect(request)).active:
            assert time.monotonic() < deadline, "second replica still answers active after a second"
            await asyncio.sleep(0.02)
        # and a JWT verified by one replica is verified by the other (shared keys)
        assert (await other.Introspect(auth_pb2.IntrospectRequest(token=admin))).active
    finally:
        await channel.close()
        await app.stop(0.5)
        await pool.close()
        await pubsub.aclose()
