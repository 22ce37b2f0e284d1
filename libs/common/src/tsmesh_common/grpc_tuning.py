"""How gRPC connections spread and recover: client load balancing and retries, server connection age.

Clients balance per call over every address a target resolves to (``round_robin``; a headless
Service behind ``dns:///name:port`` gives one address per pod) and retry idempotent writes on
UNAVAILABLE inside gRPC itself, so a draining pod costs no write. Servers close each connection
after ``max_connection_age`` (GOAWAY, with ±10% jitter from gRPC), so clients re-resolve and
reach pods added since they connected; open streams finish first unless a grace is set.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

LB_POLICIES = ("round_robin", "pick_first")
# Writes are idempotent (a point is keyed by series and timestamp): retried on UNAVAILABLE only.
RETRIED_WRITES = (("tsmesh.v1.IngestService", "WriteBatch"), ("tsmesh.v1.IngestService", "Write"))


@dataclass(frozen=True)
class GrpcTuning:
    """Load balancing, write retries and connection age (``TSMESH_GRPC_*``, read by ``CommonConfig``)."""

    lb_policy: str = "round_robin"
    write_attempts: int = 5
    max_connection_age_seconds: float = 300.0
    max_connection_age_grace_seconds: float = 0.0

    def service_config(self) -> str:
        """The client service config (JSON): the balancing policy and the write retry policy."""
        config: dict[str, Any] = {
            "loadBalancingConfig": [{self.lb_policy: {}}],
            # round_robin skips servers whose overall health is not SERVING (draining, or starting)
            "healthCheckConfig": {"serviceName": ""},
        }
        if self.write_attempts > 1:
            config["methodConfig"] = [
                {
                    "name": [{"service": service, "method": method} for service, method in RETRIED_WRITES],
                    "retryPolicy": {
                        "maxAttempts": self.write_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        return json.dumps(config, separators=(",", ":"))

    def channel_options(self) -> tuple[tuple[str, Any], ...]:
        """Channel arguments that apply the service config (retries enabled only if a policy exists)."""
        return (
            ("grpc.service_config", self.service_config()),
            ("grpc.enable_retries", 1 if self.write_attempts > 1 else 0),
        )

    def server_options(self) -> tuple[tuple[str, Any], ...]:
        """Server arguments bounding connection age (none when the age is 0)."""
        if self.max_connection_age_seconds <= 0:
            return ()
        options: list[tuple[str, Any]] = [("grpc.max_connection_age_ms", int(self.max_connection_age_seconds * 1000))]
        if self.max_connection_age_grace_seconds > 0:
            options.append(("grpc.max_connection_age_grace_ms", int(self.max_connection_age_grace_seconds * 1000)))
        return tuple(options)
