"""Where the CLI finds the gateway and a token: flags, environment, a profile, then ``make run``'s dev.env.

Profiles live in ``$XDG_CONFIG_HOME/tsmesh/config.json`` (mode 0600, it holds tokens). With no
profile named and none saved as current, ``.tsmesh/dev.env`` of the working directory (or a parent)
is the default profile, so ``make run``'s credentials work out of the box.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tsmesh_cli.errors import UNAUTHENTICATED, CliError

DEFAULT_URL = "http://127.0.0.1:8080"
DEV_ENV = Path(".tsmesh") / "dev.env"


@dataclass(frozen=True)
class Target:
    """The gateway to talk to and the bearer token to send (``None`` when there is none)."""

    url: str
    token: str | None
    source: str
    profile: str | None = None

    def require_token(self) -> str:
        """The token, or a clear error telling how to get one."""
        if not self.token:
            raise CliError(
                "no token: run `tsmesh login`, set TSMESH_TOKEN, or start `make run` (writes .tsmesh/dev.env)",
                UNAUTHENTICATED,
            )
        return self.token


def config_path(environ: Mapping[str, str]) -> Path:
    """``$XDG_CONFIG_HOME/tsmesh/config.json`` (``~/.config`` when unset)."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", str(Path.home()))) / ".config")
    return Path(base) / "tsmesh" / "config.json"


def state_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME/tsmesh`` (``~/.local/state/tsmesh`` when unset): write checkpoints."""
    base = environ.get("XDG_STATE_HOME") or str(Path(environ.get("HOME", str(Path.home()))) / ".local" / "state")
    return Path(base) / "tsmesh"


def read_env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` pairs of a dev.env file (nothing when it is missing)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def find_dev_env(start: Path, environ: Mapping[str, str]) -> Path | None:
    """``$TSMESH_DEV_ENV``, else the nearest ``.tsmesh/dev.env`` at or above ``start``."""
    if environ.get("TSMESH_DEV_ENV"):
        return Path(environ["TSMESH_DEV_ENV"])
    for folder in (start, *start.parents):
        if (folder / DEV_ENV).is_file():
            return folder / DEV_ENV
    return None


class Profiles:
    """The saved profiles: ``{"current": name, "profiles": {name: {"url", "token", ...}}}``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data = self._load()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"current": None, "profiles": {}}
        except (OSError, ValueError) as exc:
            raise CliError(f"cannot read {self.path}: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
            raise CliError(f"{self.path} is not a tsmesh config file")
        return data

    @property
    def current(self) -> str | None:
        """The profile used when none is named."""
        value = self._data.get("current")
        return value if isinstance(value, str) else None

    def names(self) -> list[str]:
        """Saved profile names, sorted."""
        return sorted(self._data["profiles"])

    def get(self, name: str) -> dict[str, str] | None:
        """A profile's settings, or ``None``."""
        found = self._data["profiles"].get(name)
        return dict(found) if isinstance(found, dict) else None

    def put(self, name: str, settings: Mapping[str, str], *, make_current: bool = True) -> None:
        """Save (replace) a profile, and make it current unless told otherwise."""
        self._data["profiles"][name] = dict(settings)
        if make_current:
            self._data["current"] = name
        self._save()

    def remove(self, name: str) -> bool:
        """Forget a profile; whether it existed."""
        existed = self._data["profiles"].pop(name, None) is not None
        if self._data.get("current") == name:
            self._data["current"] = None
        self._save()
        return existed

    def use(self, name: str) -> None:
        """Make ``name`` the current profile."""
        if name not in self._data["profiles"]:
            raise CliError(f"no profile named {name!r} (have: {', '.join(self.names()) or 'none'})", 6)
        self._data["current"] = name
        self._save()

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(self._data, f, indent=2)
        os.replace(tmp, self.path)


def resolve(
    environ: Mapping[str, str],
    *,
    url: str | None = None,
    token: str | None = None,
    profile: str | None = None,
    cwd: Path | None = None,
) -> Target:
    """Flags win, then ``TSMESH_GATEWAY_URL``/``TSMESH_TOKEN``, then the named or current profile,
    then ``.tsmesh/dev.env``; the URL defaults to :data:`DEFAULT_URL`."""
    profile = profile or environ.get("TSMESH_PROFILE") or None
    saved = Profiles(config_path(environ))
    settings: dict[str, str] = {}
    source = "defaults"
    used: str | None = None
    name = profile or saved.current
    if name is not None:
        found = saved.get(name)
        if found is None:
            if profile is not None:
                raise CliError(f"no profile named {name!r} (have: {', '.join(saved.names()) or 'none'})", 6)
        else:
            settings, source, used = found, f"profile {name}", name
    if not settings:
        dev_env = find_dev_env(cwd or Path.cwd(), environ)
        if dev_env is not None:
            values = read_env_file(dev_env)
            settings = {"url": values.get("TSMESH_GATEWAY_URL", ""), "token": values.get("TSMESH_TOKEN", "")}
            source = str(dev_env)
    chosen_url = url or environ.get("TSMESH_GATEWAY_URL") or settings.get("url") or DEFAULT_URL
    chosen_token = token or environ.get("TSMESH_TOKEN") or settings.get("token") or None
    from_profile = used if chosen_token == settings.get("token") else None
    return Target(chosen_url.rstrip("/"), chosen_token, source, from_profile)
