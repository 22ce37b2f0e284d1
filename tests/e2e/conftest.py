"""End-to-end fixtures: a private stack (``scripts/devstack.py``) on free ports with a throwaway database.

The private stack never touches a developer's ``make run`` (ports 8080/5005x/910x, database
``tsmesh``, ``.tsmesh/``): every port is free-picked, the database is ``tsmesh_e2e_<random>`` and
is dropped afterwards, and the state folder lives in the test's temporary directory
(``scripts/stack_config.py``: :func:`private_config`, :func:`drop_database`, shared with the benchmarks).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT / "scripts") not in sys.path:
    sys.path.insert(0, str(ROOT / "scripts"))

from stack_config import StackConfig, drop_database, private_config  # noqa: E402


@pytest.fixture
def stack_config(tmp_path: Path) -> Iterator[Callable[..., StackConfig]]:
    """Factory of private stack configs; every database it named is dropped afterwards."""
    made: list[StackConfig] = []

    def make(**overrides: object) -> StackConfig:
        cfg = private_config(tmp_path / f"stack{len(made)}", **overrides)
        made.append(cfg)
        return cfg

    yield make
    for cfg in made:
        drop_database(cfg.database)
