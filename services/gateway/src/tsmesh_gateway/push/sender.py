"""Push bodies parsed in the worker's parse process and their points sent to ingest as
``WriteRequest`` wire bytes.

The requests built by :class:`~tsmesh_common.pointwire.RequestWriter` (in :mod:`.parsing`) go to
``WriteBatch`` through a call without a request serializer: the bytes are sent as built (ingest
validates them from their wire bytes, ADR 0206), in order, each at most ``chunk_points`` points.
A failing chunk ends the write with its error; points of earlier chunks are stored, and a retry
of the whole body is harmless (storage is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from starlette.responses import Response
from tsmesh.v1 import ingest_pb2

from tsmesh_gateway.deps import Caller
from tsmesh_gateway.http_errors import HttpError, to_http_error
from tsmesh_gateway.push import parsing
from tsmesh_gateway.push.config import PushConfig
from tsmesh_gateway.push.offload import Offload
from tsmesh_gateway.push.parsing import Bounds, Parsed, Refused
from tsmesh_gateway.upstreams import Upstream

WRITE_BATCH = "/tsmesh.v1.IngestService/WriteBatch"
OutcomeT = TypeVar("OutcomeT")


@dataclass
class Sent:
    """What ingest did with a push: points accepted, and (index in the push, field, reason) of
    the points it refused."""

    accepted: int = 0
    refused: list[tuple[int, str, str]] = field(default_factory=list)


class PushSender:
    """Parses push bodies in the worker's :class:`Offload` and writes their points to ingest."""

    def __init__(self, ingest: Upstream, cfg: PushConfig) -> None:
        self.cfg = cfg
        self.bounds = Bounds(cfg.chunk_points, cfg.max_points, cfg.max_decoded_bytes)
        self._ingest = ingest
        self._offload = Offload(cfg.parse_processes)
        self._write_batch: Any = ingest.channel.unary_unary(
            WRITE_BATCH, request_serializer=None, response_deserializer=ingest_pb2.WriteResponse.FromString
        )

    async def parse(
        self, headers: dict[str, str], fn: Callable[..., Parsed[OutcomeT] | Refused], *args: Any
    ) -> Parsed[OutcomeT]:
        """``fn(*args)`` (a :mod:`.parsing` function) in the parse process; a refused body is raised."""
        result = await self._offload.run(fn, *args)
        if isinstance(result, Refused):
            raise result.error(headers)
        return result

    async def send(self, caller: Caller, requests: list[bytes]) -> Sent:
        """Write ``requests`` in order; an upstream failure is raised as an HTTP error whose
        ``details.accepted_points`` counts what earlier requests stored."""
        sent = Sent()
        for number, raw in enumerate(requests):
            base = number * self.cfg.chunk_points  # every request but the last is full
            try:
                answer = await self._ingest.unary(self._write_batch, raw, authorization=caller.authorization)
            except Exception as exc:  # noqa: BLE001 - mapped, with the count of what was already stored
                error = to_http_error(exc)
                error.details["accepted_points"] = sent.accepted
                if sent.accepted:
                    error.message = f"partial write: {sent.accepted} points accepted before failure: {error.message}"
                error.headers = {**caller.headers, **error.headers}
                raise error from None
            sent.accepted += answer.accepted
            sent.refused.extend((base + int(e.index), e.field, e.reason) for e in answer.errors)
        return sent

    async def write_lines(self, caller: Caller, body: bytes, scale: int, bucket: str) -> Response:
        """Line protocol written as InfluxDB does: good lines stored, 204 when all were, else 400
        ``partial write`` naming the first bad line (and how many there were)."""
        parsed = await self.parse(caller.headers, parsing.lines, body, scale, bucket, self.bounds)
        sent = await self.send(caller, parsed.requests)
        outcome = parsed.outcome
        lines = outcome.line_of_point
        refused_lines = [(lines[i], f"{f}: {r}") for i, f, r in sent.refused if 0 <= i < len(lines)]
        errors = sorted([*outcome.errors, *refused_lines])
        if not errors and not parsed.points:
            raise HttpError(400, "INVALID_ARGUMENT", "writing requires points", {"field": "body"}, caller.headers)
        if not errors:
            return Response(status_code=204, headers=caller.headers)
        line, reason = errors[0]
        bad_lines = outcome.bad_lines + len({n for n, _ in refused_lines})
        raise HttpError(
            400,
            "INVALID_ARGUMENT",
            f"partial write: line {line}: {reason}",
            {"field": "body", "line": line, "reason": reason, "bad_lines": bad_lines, "accepted_points": sent.accepted},
            caller.headers,
        )
