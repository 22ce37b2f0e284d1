"""A service's credential towards auth: its name and a shared secret, sent as gRPC metadata.

Auth holds every service's secret (from a Secret) and believes what only a service may say —
the gateway's ``x-client-address``, audit events reported on a caller's behalf — when the
credential matches (ADR 0108). The secret is never printed: ``repr`` hides it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

SERVICE_CREDENTIAL_HEADER = "x-tsmesh-service-credential"
MIN_SECRET_CHARS = 32
SERVICE_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")


@dataclass(frozen=True)
class ServiceCredential:
    """``service`` authenticated by ``secret`` (at least 32 characters)."""

    service: str
    secret: str = field(repr=False)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata entry that carries the credential on a call to auth."""
        return ((SERVICE_CREDENTIAL_HEADER, f"{self.service}:{self.secret}"),)


def presented(metadata: object) -> tuple[str, str] | None:
    """(service, secret) of the credential in a call's metadata, None when absent or malformed."""
    for key, value in metadata or ():  # type: ignore[attr-defined]
        if key == SERVICE_CREDENTIAL_HEADER and isinstance(value, str):
            service, _, secret = value.partition(":")
            if SERVICE_NAME.fullmatch(service) and secret:
                return service, secret
            return None
    return None
