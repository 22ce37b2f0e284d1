"""Which mesh service made a call to auth, from the service credential it presents (ADR 0108).

Only a caller that proves it is the gateway may name the client address (``x-client-address``);
every other caller is identified by its socket peer. Only an authenticated service may report
audit events on a user's behalf. The service of the current call is kept in :data:`reporter_var`
so each audit row records who vouched for it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from tsmesh_common.service_credential import presented

CLIENT_ADDRESS_HEADER = "x-client-address"
# The services whose word on the client address auth believes.
CLIENT_ADDRESS_VOUCHERS = frozenset({"gateway"})

reporter_var: ContextVar[str] = ContextVar("tsmesh_auth_reporter", default="")


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


class ServiceCallers:
    """Checks service credentials against the digests of the secrets auth was given."""

    def __init__(self, digests: Mapping[str, bytes]) -> None:
        self._digests = dict(digests)

    def __repr__(self) -> str:
        return f"ServiceCallers(services={sorted(self._digests)})"

    def identify(self, metadata: Any) -> str:
        """The authenticated service behind a call's metadata, '' when none (or a wrong secret)."""
        found = presented(metadata)
        if found is None:
            return ""
        service, secret = found
        expected = self._digests.get(service)
        if expected is None or not hmac.compare_digest(expected, secret_digest(secret)):
            return ""
        return service

    def client_address(self, context: Any) -> str:
        """The client's IP: what an authenticated gateway says, else the transport peer. Records the
        calling service in :data:`reporter_var` for the audit rows this call writes."""
        metadata = context.invocation_metadata() or ()
        service = self.identify(metadata)
        reporter_var.set(service)
        if service in CLIENT_ADDRESS_VOUCHERS:
            for key, value in metadata:
                if key == CLIENT_ADDRESS_HEADER and isinstance(value, str) and 0 < len(value) <= 64:
                    return value
        return peer_address(context)


def peer_address(context: Any) -> str:
    """The IP of the transport peer (``ipv4:1.2.3.4:5678``, ``ipv6:[::1]:5678``)."""
    peer: str = context.peer() or ""
    kind, _, rest = peer.partition(":")
    if kind == "ipv4":
        return rest.rsplit(":", 1)[0]
    if kind == "ipv6":
        return rest.rsplit(":", 1)[0].strip("[]")
    return peer[:64]
