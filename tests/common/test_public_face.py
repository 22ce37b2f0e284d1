"""``tsmesh_common.__all__`` is exactly the set of modules the rest of tsmesh imports.

Modelled on httpx's ``tests/test_exported_members.py``: a module becomes public by being listed,
and a listed module nothing imports any more is dropped from the list (or from the library).
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import tsmesh_common

ROOT = Path(__file__).resolve().parents[2]
USERS = ("services", "cli", "scripts", "bench")


def imported_modules() -> dict[str, set[str]]:
    """``tsmesh_common`` submodule -> the files outside ``libs/common`` that import it."""
    users: dict[str, set[str]] = {}
    for folder in USERS:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names: list[str] = []
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    if node.module == "tsmesh_common":
                        names = [alias.name for alias in node.names]
                    elif node.module.startswith("tsmesh_common."):
                        names = [node.module.split(".")[1]]
                elif isinstance(node, ast.Import):
                    names = [a.name.split(".")[1] for a in node.names if a.name.startswith("tsmesh_common.")]
                for name in names:
                    users.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return users


def test_all_lists_exactly_what_the_services_import() -> None:
    users = imported_modules()
    assert sorted(users) == sorted(tsmesh_common.__all__), (
        "imported but not public: "
        f"{ {m: sorted(f)[:3] for m, f in users.items() if m not in tsmesh_common.__all__} }; "
        f"public but unused: {sorted(set(tsmesh_common.__all__) - set(users))}"
    )


def test_every_listed_name_is_a_module_of_the_package() -> None:
    modules = {info.name for info in pkgutil.iter_modules(tsmesh_common.__path__)}
    assert len(tsmesh_common.__all__) == len(set(tsmesh_common.__all__))
    for name in tsmesh_common.__all__:
        assert name in modules, name
        assert importlib.import_module(f"tsmesh_common.{name}").__doc__, f"tsmesh_common.{name} has no docstring"
