"""A private tsmesh stack for end-to-end tests: the whole mesh (``scripts/stack.py``) on free ports
with a throwaway database, never ``make run``'s; stopped and the database dropped afterwards."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
from devstack import DEMO_EMAIL, DEMO_TENANT, Stack
from stack_config import drop_database, private_config


@contextlib.contextmanager
def private_stack(folder: Path) -> Iterator[Stack]:
    """A started stack whose state lives in ``folder``."""
    cfg = private_config(folder)
    with open(os.devnull, "w") as quiet:
        running = Stack(cfg, out=quiet)
        try:
            running.start()
            yield running
        finally:
            running.stop()
            drop_database(cfg.database)


def api_token(stack: Stack, name: str, scopes: tuple[str, ...] = ("read", "write")) -> str:
    """A new API token of the demo tenant (created by its admin through the gateway)."""
    with httpx.Client(base_url=stack.gateway_url, timeout=20) as http:
        login = http.post(
            "/v1/auth/login", json={"tenant": DEMO_TENANT, "email": DEMO_EMAIL, "password": stack.admin_password}
        )
        assert login.status_code == 200, login.text
        session = {"Authorization": f"Bearer {login.json()['access_token']}"}
        created = http.post("/v1/tokens", json={"name": name, "scopes": list(scopes)}, headers=session)
        assert created.status_code == 201, created.text
        secret: str = created.json()["secret"]
        return secret
