"""Composition root of the auth service.

python -m tsmesh_auth               serve AuthService (gRPC 50053, metrics 9103)
python -m tsmesh_auth migrate       apply the schema ``auth`` migrations
python -m tsmesh_auth admin ...     administration (see ``tsmesh_auth.admin``)
python -m tsmesh_auth service-credentials DIR NAME...
                                    write a random secret per service into DIR, keeping those present
                                    (local set-ups: compose; ADR 0108)
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from pathlib import Path

from tsmesh_auth import admin
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.migrate import upgrade
from tsmesh_auth.wiring import build, connect
from tsmesh_common.config import load_or_exit
from tsmesh_common.logs import configure_logging
from tsmesh_common.server import run, serve
from tsmesh_common.service_credential import SERVICE_NAME


async def _serve() -> None:
    cfg = load_or_exit(AuthConfig.from_env, os.environ)
    app = await build(cfg, await connect(cfg))
    await serve(app, cfg.common)


def _migrate() -> int:
    cfg = load_or_exit(AuthConfig.from_env, os.environ)
    configure_logging(cfg.common.service, cfg.common.log_level)
    upgrade(cfg.database_url)
    print("schema auth is up to date", file=sys.stderr)
    return 0


def _service_credentials(args: list[str]) -> int:
    if len(args) < 2 or not all(SERVICE_NAME.fullmatch(name) for name in args[1:]):
        print("usage: python -m tsmesh_auth service-credentials DIR NAME...", file=sys.stderr)
        return 2
    directory = Path(args[0])
    for name in args[1:]:
        path = directory / name
        if path.exists():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)  # read by the services' own user
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(32))
        print(f"service credential of {name} written", file=sys.stderr)
    return 0


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["migrate"]:
        sys.exit(_migrate())
    if args[:1] == ["admin"]:
        from tsmesh_common.config import ConfigError

        try:
            code = asyncio.run(admin.run(args[1:], os.environ))
        except ConfigError as exc:
            print(f"configuration error: {exc}", file=sys.stderr)
            code = 2
        sys.exit(code)
    if args[:1] == ["service-credentials"]:
        sys.exit(_service_credentials(args[1:]))
    if args:
        print("usage: python -m tsmesh_auth [migrate | admin ... | service-credentials DIR NAME...]", file=sys.stderr)
        sys.exit(2)
    run(_serve)


if __name__ == "__main__":
    main()
