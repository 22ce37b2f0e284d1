"""Signed checkpoints of the audit chain, exported outside PostgreSQL (ADR 0107).

A checkpoint names the newest row (id and MAC) at a moment and is signed with the audit Ed25519 key.
It is written as a JSON log line (field ``audit_checkpoint``) and, when a directory is configured, as
one file per checkpoint (``audit-checkpoint-<id>.json``, created once, never rewritten) for an SRE to
ship to write-once storage. ``verify-audit`` reads them back: a row a checkpoint names must still hold
the MAC it had, so deleting the newest rows or rewriting the chain shows even to a role that can.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from tsmesh_auth.audit_keys import AuditKeys

log = logging.getLogger(__name__)

FILE_PREFIX = "audit-checkpoint-"
LOG_FIELD = "audit_checkpoint"
VERSION = 1
Head = Callable[[], Awaitable[tuple[int, bytes] | None]]


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: row ``row_id`` had MAC ``mac`` at ``at`` (chain key ``key_id``)."""

    row_id: int
    mac: bytes
    at: str
    key_id: str
    source: str = ""


class CheckpointRefused(ValueError):
    """A document that is not a checkpoint signed by this deployment's audit key."""


def _body(row_id: int, mac: bytes, at: str, key_id: str) -> bytes:
    doc = {"v": VERSION, "id": row_id, "hash": mac.hex(), "at": at, "key": key_id}
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def sign(keys: AuditKeys, row_id: int, mac: bytes, at: datetime) -> dict[str, Any]:
    """The exported document of a checkpoint: its fields and ``sig`` (Ed25519, base64)."""
    when = at.astimezone(UTC).isoformat(timespec="seconds")
    body = _body(row_id, mac, when, keys.key_id)
    return {**orjson.loads(body), "sig": base64.b64encode(keys.sign(body)).decode()}


def verify(doc: Mapping[str, Any], keys: AuditKeys, source: str = "") -> Checkpoint:
    """The checkpoint ``doc`` states, or :class:`CheckpointRefused` naming what is wrong with it."""
    try:
        if doc.get("v") != VERSION:
            raise CheckpointRefused(f"{source}: unknown version {doc.get('v')!r}")
        row_id, mac_hex, at, key_id, sig = doc["id"], doc["hash"], doc["at"], doc["key"], doc["sig"]
        if not (isinstance(row_id, int) and all(isinstance(v, str) for v in (mac_hex, at, key_id, sig))):
            raise CheckpointRefused(f"{source}: a field has the wrong type")
        mac, signature = bytes.fromhex(mac_hex), base64.b64decode(sig, validate=True)
    except KeyError as exc:
        raise CheckpointRefused(f"{source}: field {exc.args[0]} is missing") from None
    except (ValueError, binascii.Error):
        raise CheckpointRefused(f"{source}: field hash or sig is not valid hex/base64") from None
    if key_id != keys.key_id:
        raise CheckpointRefused(f"{source}: signed under another audit key (key id {key_id}, ours {keys.key_id})")
    if not keys.signed(_body(row_id, mac, at, key_id), signature):
        raise CheckpointRefused(f"{source}: the signature does not verify (forged or altered)")
    return Checkpoint(row_id, mac, at, key_id, source)


def _documents(path: Path) -> Iterable[tuple[str, Any]]:
    """(source, parsed JSON) of a checkpoint directory's files, or of a JSON-lines log file's checkpoints."""
    if path.is_dir():
        for file in sorted(path.glob(f"{FILE_PREFIX}*.json")):
            try:
                yield str(file), orjson.loads(file.read_bytes())
            except orjson.JSONDecodeError:
                yield str(file), None
        return
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # a log file holds other lines too
        if isinstance(entry, dict) and isinstance(entry.get(LOG_FIELD), str):
            try:
                yield f"{path}:{number}", orjson.loads(entry[LOG_FIELD])
            except orjson.JSONDecodeError:
                yield f"{path}:{number}", None
        elif isinstance(entry, dict) and "sig" in entry:
            yield f"{path}:{number}", entry


def load(paths: Iterable[Path], keys: AuditKeys) -> tuple[list[Checkpoint], list[str]]:
    """The verified checkpoints found under ``paths`` and the reasons each other one was refused."""
    checkpoints: list[Checkpoint] = []
    refused: list[str] = []
    for path in paths:
        if not path.exists():
            refused.append(f"{path}: no such file or directory")
            continue
        for source, doc in _documents(path):
            try:
                if not isinstance(doc, dict):
                    raise CheckpointRefused(f"{source}: not a JSON object")
                checkpoints.append(verify(doc, keys, source))
            except CheckpointRefused as exc:
                refused.append(str(exc))
    return checkpoints, refused


class CheckpointExporter:
    """Signs a checkpoint and writes it out: always as a log line, and as a file when ``directory`` is set."""

    def __init__(
        self,
        keys: AuditKeys,
        directory: Path | None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._keys = keys
        self._directory = directory
        self._clock = clock

    def export(self, row_id: int, mac: bytes) -> dict[str, Any]:
        doc = sign(self._keys, row_id, mac, self._clock())
        text = orjson.dumps(doc).decode()
        log.info("audit checkpoint", extra={LOG_FIELD: text})
        if self._directory is not None:
            self._write_once(self._directory / f"{FILE_PREFIX}{row_id:020d}.json", text.encode() + b"\n")
        return doc

    @staticmethod
    def _write_once(target: Path, data: bytes) -> None:
        """Write a temporary file, fsync, then hard-link it into place: a reader never sees a partial
        checkpoint and an existing one (another replica's, same row) is never replaced."""
        temp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temp, target)
        except FileExistsError:
            pass
        finally:
            temp.unlink()


class Checkpointer:
    """Exports a checkpoint of the chain's head whenever it has moved since the last one."""

    def __init__(self, head: Head, exporter: CheckpointExporter) -> None:
        self._head = head
        self._exporter = exporter
        self._last: int | None = None

    async def checkpoint(self) -> bool:
        """Export one checkpoint if the chain grew; whether one was exported."""
        head = await self._head()
        if head is None or head[0] == self._last:
            return False
        await asyncio.to_thread(self._exporter.export, *head)
        self._last = head[0]
        return True

    async def run_forever(self, interval: float) -> None:
        """Call :meth:`checkpoint` every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.checkpoint()
            except Exception as exc:  # noqa: BLE001 - a failed export is retried next period
                log.warning("audit checkpoint failed", extra={"error": f"{type(exc).__name__}: {exc}"})
