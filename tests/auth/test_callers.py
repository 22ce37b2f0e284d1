"""Which service made a call: only a gateway proving itself may name the client address."""

from __future__ import annotations

from tsmesh_auth.callers import ServiceCallers, reporter_var, secret_digest
from tsmesh_common.service_credential import ServiceCredential

GATEWAY = ServiceCredential("gateway", "g" * 40)
QUERY = ServiceCredential("query", "q" * 40)
SPOOFED = (("x-client-address", "1.2.3.4"),)


class _Ctx:
    """The two things of a grpc.aio ServicerContext that callers.py reads."""

    def __init__(self, peer: str, md: tuple[tuple[str, str], ...] = ()) -> None:
        self._peer, self._md = peer, md

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._md


CALLERS = ServiceCallers({c.service: secret_digest(c.secret) for c in (GATEWAY, QUERY)})


def test_an_unauthenticated_callers_client_address_is_ignored() -> None:
    assert CALLERS.client_address(_Ctx("ipv4:10.0.0.7:5555", SPOOFED)) == "10.0.0.7"
    assert reporter_var.get() == ""
    assert CALLERS.client_address(_Ctx("ipv6:[::1]:5555")) == "::1"


def test_a_wrong_secret_or_unknown_service_is_no_credential() -> None:
    wrong = ServiceCredential("gateway", "x" * 40)
    unknown = ServiceCredential("ingest", "g" * 40)
    for credential in (wrong, unknown):
        assert CALLERS.client_address(_Ctx("ipv4:10.0.0.7:1", credential.metadata() + SPOOFED)) == "10.0.0.7"
    assert CALLERS.identify((("x-tsmesh-service-credential", "gateway"),)) == ""


def test_only_the_gateway_may_name_the_client_address() -> None:
    assert CALLERS.client_address(_Ctx("ipv4:10.0.0.7:1", GATEWAY.metadata() + SPOOFED)) == "1.2.3.4"
    assert reporter_var.get() == "gateway"
    assert CALLERS.client_address(_Ctx("ipv4:10.0.0.8:1", QUERY.metadata() + SPOOFED)) == "10.0.0.8"
    assert reporter_var.get() == "query"


def test_the_secret_is_never_printed() -> None:
    assert GATEWAY.secret not in repr(GATEWAY) and GATEWAY.secret not in repr(CALLERS)
