"""Child processes of the local stack: process groups, short commands, their errors, ports and HTTP probes."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping

from stack_config import ROOT

COMMAND_TIMEOUT_S = 120.0


class StackError(Exception):
    """A step of the stack failed; the message is one line meant for the developer."""


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on (or otherwise holds) ``host:port``."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the stack process dies without cleaning up."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def kill_group(proc: subprocess.Popen[bytes] | subprocess.Popen[str], sig: signal.Signals) -> None:
    """Send ``sig`` to the process group led by ``proc``; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def run_commands(
    commands: list[tuple[list[str], Mapping[str, str]]], stdin: str | None = None
) -> list[subprocess.CompletedProcess[str]]:
    """Run short commands side by side, each in its own process group; all are killed on timeout or interrupt."""
    procs = [
        subprocess.Popen(
            args,
            env=dict(env),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            cwd=ROOT,
        )
        for args, env in commands
    ]
    results = []
    deadline = time.monotonic() + COMMAND_TIMEOUT_S
    try:
        for (args, _), proc in zip(commands, procs, strict=True):
            try:
                out, err = proc.communicate(stdin, timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise StackError(f"`{' '.join(args[1:])}` did not finish within {COMMAND_TIMEOUT_S:.0f}s") from None
            results.append(subprocess.CompletedProcess(args, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                kill_group(proc, signal.SIGKILL)
                proc.communicate()
    return results


def run_command(args: list[str], env: Mapping[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run one short command in its own process group (see :func:`run_commands`)."""
    return run_commands([(args, env)], stdin)[0]


def last_line(text: str) -> str:
    """The last non-blank line of ``text``, or ``""``."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def error_line(text: str) -> str:
    """The most telling line of a failed command's output: the last exception line, else the last line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception)\b", line) or line.startswith(("error:", "configuration error:")):
            return line[:400]
    return lines[-1][:400] if lines else "(no output)"


def failed(command: str, result: subprocess.CompletedProcess[str]) -> StackError:
    """The one-line error for a command that failed: the command, its exit code and its telling line."""
    return StackError(f"`{command}` failed (exit {result.returncode}): {error_line(result.stderr + result.stdout)}")


def http_status(url: str) -> int:
    """The HTTP status of a GET, or 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, OSError):
        return 0
