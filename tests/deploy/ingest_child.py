"""A real ingest API process for the rollout test: ``wiring.build`` and ``serve`` as in production,
verifying tokens against the test's public key (``TEST_JWK``) instead of the auth service."""

from __future__ import annotations

import json
import os

import redis.asyncio as aioredis
from testkit import NoIntrospection, StaticJwks

from tsmesh_common.authn import Authenticator, AuthenticatorConfig
from tsmesh_common.bootstrap import Mesh
from tsmesh_common.server import run, serve
from tsmesh_ingest.config import IngestConfig
from tsmesh_ingest.wiring import IngestClients, build


async def main() -> None:
    cfg = IngestConfig.from_env(os.environ)
    jwks = StaticJwks()
    jwks.keys.append(json.loads(os.environ["TEST_JWK"]))
    authenticator = Authenticator(AuthenticatorConfig(issuer="tsmesh-auth", audience="tsmesh"), jwks, NoIntrospection())
    redis = aioredis.Redis.from_url(cfg.common.redis_url)
    runtime = await build(cfg, IngestClients(redis, Mesh(authenticator)))
    await runtime.start()
    await serve(runtime.app, cfg.common)


if __name__ == "__main__":
    run(main)
