"""Wiring of the auth service's parts from a pool and Redis clients (used by ``__main__`` and tests)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tsmesh.v1 import auth_pb2_grpc

from tsmesh_auth.api_tokens import ApiTokenStore
from tsmesh_auth.audit import AuditLog
from tsmesh_auth.audit_checkpoints import Checkpointer, CheckpointExporter
from tsmesh_auth.audit_keys import AuditKeys
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.directory import Directory
from tsmesh_auth.kek import resolve_kek
from tsmesh_auth.keys import KeyRing
from tsmesh_auth.passwords import PasswordHasher
from tsmesh_auth.revocations import RedisRevocationPublisher, RevocationPublisher
from tsmesh_auth.service import PUBLIC_METHODS, SERVICE_NAME, AuthServicer, introspected
from tsmesh_auth.sessions import Sessions
from tsmesh_auth.throttle import LoginThrottle, ThrottlePolicy
from tsmesh_auth.tokens import AccessTokenIssuer
from tsmesh_common.authn import SCOPES, Authenticator, AuthenticatorConfig
from tsmesh_common.context import Principal
from tsmesh_common.errors import FailedPrecondition
from tsmesh_common.redis_keys import REVOCATION_CHANNEL
from tsmesh_common.server import GrpcApp


class StoreIntrospection:
    """The introspection source of auth's own authenticator: the token store, no network hop."""

    def __init__(self, store: ApiTokenStore) -> None:
        self._store = store

    async def introspect(self, token: str) -> Principal | None:
        entry = await self._store.lookup(token)
        if entry is None:
            return None
        return Principal(
            tenant_id=entry.tenant_id,
            subject=entry.subject,
            scopes=frozenset(entry.scopes) & SCOPES,
            expires_at=entry.expires_at,
            token_id=entry.token_id,
            kind="api_token",
        )


class LocalThenRedisPublisher:
    """Refuse a revoked token in this process at once, then announce it to the mesh."""

    def __init__(self, authenticator: Authenticator, remote: RevocationPublisher) -> None:
        self._authenticator = authenticator
        self._remote = remote

    async def publish(self, token_id: str, until: float) -> None:
        self._authenticator.revoke(token_id, until)
        await self._remote.publish(token_id, until)


@dataclass
class AuthParts:
    """Everything the server and the admin CLI share."""

    config: AuthConfig
    pool: Any
    keyring: KeyRing
    directory: Directory
    audit: AuditLog
    checkpointer: Checkpointer
    tokens: ApiTokenStore
    sessions: Sessions
    authenticator: Authenticator
    hasher: PasswordHasher


async def check_migrated(pool: Any) -> None:
    async with pool.acquire() as conn:
        present = await conn.fetchval("SELECT to_regclass('auth.signing_keys') IS NOT NULL")
    if not present:
        raise FailedPrecondition("schema auth is not migrated: run `python -m tsmesh_auth migrate` first")


def max_token_lifetime(cfg: AuthConfig) -> timedelta:
    return timedelta(seconds=cfg.access_ttl_seconds)


async def build(cfg: AuthConfig, pool: Any, redis: Any) -> AuthParts:
    """Resolve the KEK, load (or, first time, create) signing keys and wire every component."""
    await check_migrated(pool)
    encryption = await resolve_kek(pool, cfg.kek, cfg.production)
    keyring = KeyRing(pool, encryption, max_token_lifetime(cfg))
    await keyring.ensure_signing_key(cfg.production)
    hasher = PasswordHasher(cfg.bcrypt_cost)
    audit_keys = AuditKeys.from_kek(encryption)
    audit = AuditLog(pool, audit_keys)
    checkpointer = Checkpointer(audit.head, CheckpointExporter(audit_keys, cfg.audit_checkpoint_dir))
    directory = Directory(pool, hasher)
    remote = RedisRevocationPublisher(redis)
    tokens = ApiTokenStore(
        pool,
        audit,
        remote,
        cache_seconds=cfg.introspect_cache_seconds,
        default_grace_seconds=cfg.api_token_grace_seconds,
        render=introspected,
    )
    authenticator = Authenticator(
        AuthenticatorConfig(issuer=cfg.common.jwt_issuer, audience=cfg.common.jwt_audience, api_token_cache_seconds=0),
        keyring,
        StoreIntrospection(tokens),
    )
    authenticator.on_revocation(tokens.evict)
    publisher = LocalThenRedisPublisher(authenticator, remote)
    tokens.set_publisher(publisher)
    policy = ThrottlePolicy(
        free_per_account_address=cfg.login_free_attempts_account_address,
        free_per_account=cfg.login_free_attempts_account,
        free_per_address=cfg.login_free_attempts_address,
        base_delay_seconds=cfg.login_base_delay_seconds,
        max_delay_seconds=cfg.login_max_delay_seconds,
        max_account_delay_seconds=cfg.login_max_account_delay_seconds,
    )
    issuer = AccessTokenIssuer(keyring, cfg.common.jwt_issuer, cfg.common.jwt_audience, cfg.access_ttl_seconds)
    sessions = Sessions(
        pool,
        directory,
        hasher,
        LoginThrottle(redis, policy),
        issuer,
        audit,
        publisher,
        refresh_ttl_seconds=cfg.refresh_ttl_seconds,
        reuse_grace_seconds=cfg.refresh_reuse_grace_seconds,
    )
    return AuthParts(cfg, pool, keyring, directory, audit, checkpointer, tokens, sessions, authenticator, hasher)


def create_app(parts: AuthParts, pubsub_redis: Any | None) -> GrpcApp:
    """The gRPC app: AuthService behind the shared interceptors, key reload and revocation feed."""
    app = GrpcApp(parts.authenticator, public_methods=PUBLIC_METHODS, tuning=parts.config.common.grpc)
    servicer = AuthServicer(
        parts.sessions,
        parts.keyring,
        parts.tokens,
        parts.audit,
        parts.authenticator,
        trust_client_address_header=parts.config.trust_client_address_header,
    )
    app.add_service(SERVICE_NAME, lambda server: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, server))
    app.run_in_background(parts.keyring.refresh_forever(parts.config.key_refresh_seconds), "signing-key-reload")
    app.run_in_background(parts.sessions.purge_forever(3600.0), "refresh-token-purge")
    app.run_in_background(parts.checkpointer.run_forever(parts.config.audit_checkpoint_seconds), "audit-checkpoint")
    if pubsub_redis is not None:
        app.run_in_background(
            parts.authenticator.follow_revocations(pubsub_redis, REVOCATION_CHANNEL), "revocation-feed"
        )
    app.on_shutdown(parts.tokens.drain)
    return app
