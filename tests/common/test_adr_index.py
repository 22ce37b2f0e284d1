"""The ADR index lists every decision with the status its file gives, and every ADR has one."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "adr_index.py"
_spec = importlib.util.spec_from_file_location("adr_index", _SCRIPT)
assert _spec is not None and _spec.loader is not None
adr_index = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(adr_index)


def test_index_is_current() -> None:
    assert adr_index.INDEX.read_text(encoding="utf-8") == adr_index.render(), (
        "docs/adr/README.md is stale: run python scripts/adr_index.py"
    )


def test_every_adr_is_a_row_with_its_status() -> None:
    index = adr_index.INDEX.read_text(encoding="utf-8")
    adrs = sorted(adr_index.ADR_DIR.glob("[0-9][0-9][0-9][0-9]-*.md"))
    assert len(adrs) >= 40
    for path in adrs:
        assert f"]({path.name}) |" in index, path.name


def test_an_adr_without_status_is_refused(tmp_path: Path) -> None:
    (tmp_path / "0999-no-status.md").write_text("# 0999 A decision\n\n## Context\n")
    with pytest.raises(adr_index.AdrError, match=r"0999-no-status\.md: no 'Status:' line"):
        adr_index.render(tmp_path)


def test_a_title_with_a_pipe_stays_one_cell(tmp_path: Path) -> None:
    (tmp_path / "0998-pipe.md").write_text("# 0998 A | B\n\nStatus: accepted\n")
    assert adr_index.render(tmp_path).endswith("| [0998](0998-pipe.md) | A \\| B | accepted |\n")
