"""Where an interrupted ``write`` resumes: the byte offset up to which the gateway acknowledged every point.

The checkpoint names the file by its absolute path, size and modification time; a file that changed
since starts over. It is written atomically after each acknowledged batch and removed at the end.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Fingerprint:
    """What identifies the file being imported."""

    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Fingerprint:
        """The fingerprint of ``path`` as it is now."""
        info = path.stat()
        return cls(str(path.resolve()), info.st_size, info.st_mtime_ns)


class Checkpoint:
    """The acknowledged offset of one file, kept in ``folder``."""

    def __init__(self, folder: Path, fingerprint: Fingerprint) -> None:
        digest = hashlib.sha256(fingerprint.path.encode()).hexdigest()[:32]
        self.path = folder / f"{digest}.json"
        self._fingerprint = fingerprint

    def load(self) -> tuple[int, int]:
        """``(offset, points)`` acknowledged by an earlier run of this very file; ``(0, 0)`` otherwise."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0, 0
        mine = self._fingerprint
        if not isinstance(data, dict) or [data.get("path"), data.get("size"), data.get("mtime_ns")] != [
            mine.path,
            mine.size,
            mine.mtime_ns,
        ]:
            return 0, 0
        offset, points = data.get("offset"), data.get("points", 0)
        if not isinstance(offset, int) or not 0 <= offset <= mine.size or not isinstance(points, int):
            return 0, 0
        return offset, points

    def save(self, offset: int, points: int) -> None:
        """Record that everything before ``offset`` (``points`` points) is acknowledged."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        mine = self._fingerprint
        body = json.dumps(
            {"path": mine.path, "size": mine.size, "mtime_ns": mine.mtime_ns, "offset": offset, "points": points}
        )
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(body)
        os.replace(tmp, self.path)

    def clear(self) -> None:
        """Forget the checkpoint (the import finished)."""
        self.path.unlink(missing_ok=True)
