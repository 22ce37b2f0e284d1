"""CLI fixtures: a private stack on free ports (never ``make run``'s), and a runner of the real ``tsmesh`` script."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_stack import Cli
from devstack import Stack
from stackkit import private_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with private_stack(tmp_path_factory.mktemp("cli-stack")) as running:
        yield running


@pytest.fixture
def cli(stack: Stack, tmp_path: Path) -> Cli:
    """A CLI whose working directory holds a copy of the stack's ``.tsmesh/dev.env`` (as after ``make run``)."""
    (tmp_path / ".tsmesh").mkdir()
    (tmp_path / ".tsmesh" / "dev.env").write_text(stack.env_file.read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TSMESH_", "XDG_"))}
    env |= {"HOME": str(tmp_path / "home"), "COLUMNS": "200", "XDG_STATE_HOME": str(tmp_path / "state")}
    return Cli(env, tmp_path)
