"""Write docs/adr/README.md, the index of the architecture decision records, from the ADRs.

Each ADR opens with a `# <number> <title>` line and a `Status:` line among the next few lines. The
index lists every ADR with its title and status, so a reader sees at a glance which decisions
still hold. `python scripts/adr_index.py` rewrites the index; `--check` exits 1 when it is stale
(tests/common/test_adr_index.py runs the check).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ADR_DIR = Path(__file__).resolve().parent.parent / "docs" / "adr"
INDEX = ADR_DIR / "README.md"

HEADER = """# Architecture decision records

One file per decision, numbered by area: 00xx the whole mesh, 01xx auth, 02xx ingest, 03xx query,
04xx gateway, 05xx CLI and console. A decision is not rewritten to say something else: a later
ADR supersedes it, in whole or in part, and both Status lines say so. Every ADR opens with its
title and a `Status:` line. This index is generated: `python scripts/adr_index.py` rewrites it,
and the tests fail when it is stale.

| ADR | Decision | Status |
|---|---|---|
"""

_TITLE = re.compile(r"^#\s*(?:\d+[.:]?\s*)?(?P<title>.+)$")


class AdrError(ValueError):
    """An ADR lacks its title or its Status line."""


def entry(path: Path) -> str:
    """The index row of one ADR."""
    lines = path.read_text(encoding="utf-8").splitlines()
    title = _TITLE.match(lines[0]) if lines else None
    if title is None:
        raise AdrError(f"{path.name}: the first line must be '# <number> <title>'")
    status = next(
        (line.split(":", 1)[1].strip() for line in lines[1:6] if line.lower().startswith("status:")),
        None,
    )
    if not status:
        raise AdrError(f"{path.name}: no 'Status:' line within the first lines")
    cells = [f"[{path.name[:4]}]({path.name})", title["title"].strip(), status]
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |\n"


def render(adr_dir: Path = ADR_DIR) -> str:
    """The whole index, in ADR number order."""
    return HEADER + "".join(entry(p) for p in sorted(adr_dir.glob("[0-9][0-9][0-9][0-9]-*.md")))


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if INDEX.read_text(encoding="utf-8") != text:
            print("docs/adr/README.md is stale: run python scripts/adr_index.py", file=sys.stderr)
            return 1
        return 0
    INDEX.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
