"""The admin command line: ``python -m tsmesh_auth admin <command>`` (used by ``make run``).

create-tenant NAME [--if-not-exists]           prints the tenant id
create-user --tenant T --email E --role R      password read from stdin; prints the user id
create-token --tenant T --name N --scopes read,write [--ttl-seconds S]   prints only the token
list-tokens --tenant T                         one tab-separated line per token
revoke-token --tenant T ID
rotate-key [--lead-seconds S]                  prints the new kid
verify-audit [--checkpoints PATH ...]          exit 1 when the audit log was tampered with
audit-checkpoint                               export a signed checkpoint of the audit log now
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from tsmesh_auth import audit_checkpoints
from tsmesh_auth.api_tokens import Actor, ApiTokenStore
from tsmesh_auth.app import check_migrated, max_token_lifetime
from tsmesh_auth.audit import AuditEvent, AuditLog
from tsmesh_auth.audit_keys import AuditKeys
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.db import create_pool
from tsmesh_auth.directory import Directory
from tsmesh_auth.kek import resolve_kek
from tsmesh_auth.keys import rotate
from tsmesh_auth.passwords import PasswordHasher
from tsmesh_auth.revocations import RedisRevocationPublisher
from tsmesh_common.errors import TsmeshError

ACTOR = Actor("admin-cli", "local")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tsmesh_auth admin", description="tsmesh auth administration")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("create-tenant", help="create a tenant, print its id")
    t.add_argument("name")
    t.add_argument("--if-not-exists", action="store_true", help="print the existing id instead of failing")
    u = sub.add_parser("create-user", help="create a user; the password is read from stdin")
    u.add_argument("--tenant", required=True)
    u.add_argument("--email", required=True)
    u.add_argument("--role", required=True, choices=("admin", "writer", "reader"))
    c = sub.add_parser("create-token", help="create an API token, print only the token")
    c.add_argument("--tenant", required=True)
    c.add_argument("--name", required=True)
    c.add_argument("--scopes", required=True, help="comma-separated: read,write,admin")
    c.add_argument("--ttl-seconds", type=int, default=0, help="0 = no expiry")
    ls = sub.add_parser("list-tokens", help="list a tenant's API tokens")
    ls.add_argument("--tenant", required=True)
    r = sub.add_parser("revoke-token", help="revoke an API token by id")
    r.add_argument("--tenant", required=True)
    r.add_argument("id")
    k = sub.add_parser("rotate-key", help="add a new signing key; the current one retires later")
    k.add_argument("--lead-seconds", type=float, default=None, help="delay before it signs (publish first)")
    v = sub.add_parser("verify-audit", help="verify the audit log chain, seal and signed checkpoints")
    v.add_argument(
        "--checkpoints",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="a checkpoint directory or a JSON log file (repeatable; default TSMESH_AUTH_AUDIT_CHECKPOINT_DIR)",
    )
    sub.add_parser("audit-checkpoint", help="export a signed checkpoint of the audit log now")
    return p


def read_password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\r\n")


async def run(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Execute one admin command; returns the exit code."""
    args = parser().parse_args(argv)
    cfg = AuthConfig.from_env(environ)
    pool = await create_pool(cfg.database_url, max_size=2)
    redis = aioredis.Redis.from_url(cfg.common.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        await check_migrated(pool)
        return await _dispatch(args, cfg, pool, redis)
    except TsmeshError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
        await pool.close()


async def _dispatch(args: argparse.Namespace, cfg: AuthConfig, pool: Any, redis: Any) -> int:
    encryption = await resolve_kek(pool, cfg.kek, cfg.production, quiet=True)
    audit_keys = AuditKeys.from_kek(encryption)
    audit = AuditLog(pool, audit_keys)
    directory = Directory(pool, PasswordHasher(cfg.bcrypt_cost))
    tokens = ApiTokenStore(pool, audit, RedisRevocationPublisher(redis))
    command = args.command
    if command == "create-tenant":
        tenant_id, created = await directory.create_tenant(args.name, if_not_exists=args.if_not_exists)
        if created:
            await audit.append(AuditEvent("tenant.create", "success", tenant_id, ACTOR.subject, ACTOR.client_address))
        print(tenant_id)
    elif command == "create-user":
        user_id = await directory.create_user(args.tenant, args.email, read_password(), args.role)
        tenant_id = await directory.tenant_id(args.tenant)
        await audit.append(
            AuditEvent("user.create", "success", tenant_id, ACTOR.subject, ACTOR.client_address, user_id)
        )
        print(user_id)
    elif command == "create-token":
        tenant_id = await directory.tenant_id(args.tenant)
        _, secret = await tokens.create(tenant_id, args.name, args.scopes.split(","), args.ttl_seconds, ACTOR)
        print(secret)
    elif command == "list-tokens":
        tenant_id = await directory.tenant_id(args.tenant)
        for t in await tokens.list(tenant_id):
            expires = t.expires_at.isoformat() if t.expires_at else "never"
            used = t.last_used_at.isoformat() if t.last_used_at else "never"
            state = "revoked" if t.revoked else "active"
            print("\t".join((t.id, t.name, ",".join(t.scopes), t.created_at.isoformat(), expires, used, state)))
    elif command == "revoke-token":
        tenant_id = await directory.tenant_id(args.tenant)
        record = await tokens.revoke(tenant_id, args.id, ACTOR)
        print(f"{record.id} revoked")
    elif command == "rotate-key":
        lead = cfg.key_publish_lead_seconds if args.lead_seconds is None else max(args.lead_seconds, 0.0)
        kid = await rotate(pool, encryption, timedelta(seconds=lead), max_token_lifetime(cfg))
        await audit.append(AuditEvent("signing_key.rotate", "success", "", ACTOR.subject, ACTOR.client_address, kid))
        print(kid)
    elif command == "verify-audit":
        return await _verify_audit(args.checkpoints, cfg, audit, audit_keys)
    elif command == "audit-checkpoint":
        exporter = audit_checkpoints.CheckpointExporter(audit_keys, cfg.audit_checkpoint_dir)
        if not await audit_checkpoints.Checkpointer(audit.head, exporter).checkpoint():
            print("audit log is empty: no checkpoint", file=sys.stderr)
            return 1
        print("audit checkpoint exported")
    return 0


async def _verify_audit(paths: list[Path], cfg: AuthConfig, audit: AuditLog, keys: AuditKeys) -> int:
    """Verify the seal, the chain and every checkpoint; print each problem; 1 when any is found."""
    if not paths and cfg.audit_checkpoint_dir is not None:
        paths = [cfg.audit_checkpoint_dir]
    checkpoints, refused = audit_checkpoints.load(paths, keys)
    result = await audit.verify(checkpoints)
    problems = [f"checkpoint refused: {reason}" for reason in refused] + list(result.problems)
    if cfg.kek is None:
        print("warning: dev mode KEK stored in the database: not tamper-evident against its roles", file=sys.stderr)
    if not checkpoints:
        print("warning: no checkpoints given: deleting the newest rows would not show", file=sys.stderr)
    if problems:
        if result.first_bad_id is not None:
            print(f"audit chain BROKEN at row id {result.first_bad_id}", file=sys.stderr)
        for problem in problems:
            print(f"audit log TAMPERED: {problem}", file=sys.stderr)
        return 1
    print(f"audit chain ok ({result.rows} rows, {len(checkpoints)} checkpoints, key id {keys.key_id})")
    return 0
