"""The ``demo`` tenant, its admin and API token, and the ``dev.env`` file that hands them to the developer."""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stack_config import DEMO_EMAIL, DEMO_TENANT
from stack_procs import failed, last_line, run_command


@dataclass(frozen=True)
class DemoCredentials:
    """The demo API token and, when known, the demo admin's password."""

    token: str
    admin_password: str | None


def provision_demo(env: Mapping[str, str], previous_password: str | None) -> DemoCredentials:
    """Create (idempotently) the demo tenant and admin through ``python -m tsmesh_auth admin``, then a token.

    The admin keeps ``previous_password`` when there is one, so re-runs do not invalidate it.
    """
    admin = [sys.executable, "-m", "tsmesh_auth", "admin"]
    result = run_command([*admin, "create-tenant", DEMO_TENANT, "--if-not-exists"], env)
    if result.returncode != 0:
        raise failed("tsmesh_auth admin create-tenant", result)
    password = previous_password or secrets.token_urlsafe(18)
    result = run_command(
        [*admin, "create-user", "--tenant", DEMO_TENANT, "--email", DEMO_EMAIL, "--role", "admin"],
        env,
        stdin=password + "\n",
    )
    admin_password: str | None
    if result.returncode == 0:
        admin_password = password
    elif "exist" in (result.stderr + result.stdout).lower():
        admin_password = previous_password
    else:
        raise failed("tsmesh_auth admin create-user", result)
    result = run_command(
        [*admin, "create-token", "--tenant", DEMO_TENANT, "--name", "make-run", "--scopes", "read,write"], env
    )
    token = last_line(result.stdout)
    if result.returncode != 0 or not token.startswith("tsm_"):
        raise failed("tsmesh_auth admin create-token", result)
    return DemoCredentials(token, admin_password)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` pairs of a previous ``dev.env``, or nothing when there is none."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def write_env_file(path: Path, values: Mapping[str, str]) -> None:
    """Write ``values`` as ``KEY=value`` lines, mode 0600 from the start, replacing ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "# written by make run (scripts/devstack.py); local credentials, never commit\n"
    body += "".join(f"{k}={v}\n" for k, v in values.items())
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(body)
    os.replace(tmp, path)
