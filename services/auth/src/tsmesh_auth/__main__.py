"""Composition root of the auth service.

python -m tsmesh_auth               serve AuthService (gRPC 50053, metrics 9103)
python -m tsmesh_auth migrate       apply the schema ``auth`` migrations
python -m tsmesh_auth admin ...     administration (see ``tsmesh_auth.admin``)
"""

from __future__ import annotations

import asyncio
import os
import sys

from tsmesh_auth import admin
from tsmesh_auth.config import AuthConfig
from tsmesh_auth.migrate import upgrade
from tsmesh_auth.wiring import build, connect
from tsmesh_common.config import load_or_exit
from tsmesh_common.logs import configure_logging
from tsmesh_common.server import run, serve


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
    if args:
        print("usage: python -m tsmesh_auth [migrate | admin ...]", file=sys.stderr)
        sys.exit(2)
    run(_serve)


if __name__ == "__main__":
    main()
