"""The push routes' bounds (ADR 0222), from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tsmesh_common.config import Env


@dataclass(frozen=True, slots=True)
class PushConfig:
    """``max_points``: points one push request may carry in all (413 beyond), sent to ingest in
    requests of ``chunk_points``; ``max_decoded_bytes``: a body's size once decompressed (413
    beyond); ``parse_processes``: the worker's processes that parse bodies off the event loop."""

    max_points: int = 100_000
    chunk_points: int = 10_000
    max_decoded_bytes: int = 16 * 1024 * 1024
    parse_processes: int = 1

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> PushConfig:
        env = Env(environ)
        return cls(
            max_points=env.get_int("TSMESH_GATEWAY_PUSH_MAX_POINTS", 100_000, minimum=1),
            chunk_points=env.get_int("TSMESH_GATEWAY_MAX_WRITE_POINTS", 10_000, minimum=1),
            max_decoded_bytes=env.get_int("TSMESH_GATEWAY_PUSH_MAX_DECODED_BYTES", 16 * 1024 * 1024, minimum=1024),
            parse_processes=env.get_int("TSMESH_GATEWAY_PUSH_PARSE_PROCESSES", 1, minimum=1, maximum=16),
        )
