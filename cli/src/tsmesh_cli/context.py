"""What every command shares: the resolved gateway target, consoles, and the error-to-exit-code wrapper."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import typer
from rich.console import Console

from tsmesh_cli.client import Gateway
from tsmesh_cli.errors import INTERRUPTED, CliError
from tsmesh_cli.profiles import Target, resolve
from tsmesh_cli.render import default_console, error_console
from tsmesh_cli.renewal import renewed

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Session:
    """The global options of one invocation."""

    url: str | None = None
    token: str | None = None
    profile: str | None = None

    def target(self) -> Target:
        """Where to send requests (flags, environment, profile, dev.env)."""
        return renewed(resolve(os.environ, url=self.url, token=self.token, profile=self.profile))

    def gateway(self, *, need_token: bool = True, timeout: float = 60.0) -> Gateway:
        """An HTTP client for the target; refuses early when a token is needed and missing."""
        target = self.target()
        if need_token:
            target.require_token()
        return Gateway(target, timeout=timeout, on_retry=_say_retry)


def _say_retry(attempt: int, wait: float) -> None:
    err().print(f"[yellow]busy or rate limited; retry {attempt} in {wait:.1f}s[/yellow]", highlight=False)


def session(ctx: typer.Context) -> Session:
    """The :class:`Session` the root callback stored."""
    found = ctx.find_root().obj
    return found if isinstance(found, Session) else Session()


def out() -> Console:
    """The data console (stdout)."""
    return default_console()


def err() -> Console:
    """The message console (stderr)."""
    return error_console()


def handled(func: Callable[P, R]) -> Callable[P, R]:
    """Turn :class:`CliError` and Ctrl-C into a one-line message and the mapped exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CliError as exc:
            err().print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err().print("interrupted", highlight=False)
            raise typer.Exit(INTERRUPTED) from None

    return wrapper


def examples(*lines: str) -> str:
    """An "Examples" block for a command's help (kept verbatim by typer's rich help)."""
    body = "\n\n".join(f"  $ {line}" for line in lines)
    return f"\n\n[bold]Examples[/bold]\n\n{body}"


def as_dict(value: Any) -> dict[str, Any]:
    """A JSON answer that must be an object."""
    if not isinstance(value, dict):
        raise CliError("the gateway's answer is not a JSON object")
    return value
