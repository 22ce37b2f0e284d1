"""The client address of a request: the socket peer, or what trusted proxies say in X-Forwarded-For.

Behind an ingress controller or load balancer every socket peer is a proxy, so the per-address
rate limits and the audit address sent to auth would all see the proxy. The addresses
in ``TSMESH_GATEWAY_TRUSTED_PROXIES`` are believed about the hop before them: the client is the
right-most X-Forwarded-For entry that is not itself a trusted proxy (nginx ``real_ip_recursive``,
Envoy ``xff_num_trusted_hops``), so entries a client writes itself (to the left) are never read.
Without trusted proxies the resolver is :func:`peer_address`: no header read, no check (ADR 0451).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from starlette.types import Scope

Network = IPv4Network | IPv6Network
ClientAddress = Callable[[Scope], str]

FORWARDED_FOR = b"x-forwarded-for"
# The longest address worth parsing: a bracketed IPv6 address with a port (47). Longer entries
# are malformed without parsing, and never fill the verdict cache with big strings.
MAX_ENTRY_CHARS = 64
_PORT = re.compile(r":[0-9]{1,5}")
# What :meth:`TrustedProxies._judge` says of a text: (normalized address, trusted proxy?), None when
# the text is no address.
Verdict = tuple[str, bool] | None
_UNSEEN: Verdict = ("", False)


# One IPv6 host (a home router, a cloud VM) usually holds a whole /64 and can rotate through it:
# the per-address budgets key IPv6 clients on their /64 (IPv4 on the address itself).
IPV6_BUDGET_PREFIX = 64
_budget_keys: dict[str, str] = {}
_BUDGET_KEYS_MAX = 4096


def budget_address(address: str) -> str:
    """The per-address rate-limit key of a client address: the address for IPv4 (and anything that
    is no IP address, e.g. "unknown"), its /64 for IPv6 (an IPv4-mapped one counts as its IPv4)."""
    if ":" not in address:
        return address
    found = _budget_keys.get(address)
    if found is None:
        try:
            parsed = IPv6Address(address)
        except ValueError:
            found = address
        else:
            if parsed.ipv4_mapped is not None:
                found = str(parsed.ipv4_mapped)
            else:
                found = str(IPv6Network((parsed, IPV6_BUDGET_PREFIX), strict=False))
        if len(_budget_keys) >= _BUDGET_KEYS_MAX:
            _budget_keys.clear()
        _budget_keys[address] = found
    return found


def peer_address(scope: Scope) -> str:
    """The socket peer's address ("unknown" without one, e.g. a Unix socket): the client when no
    proxy is trusted."""
    client: tuple[str, int] | None = scope.get("client")
    return client[0] if client else "unknown"


def parse_address(text: str) -> IPv4Address | IPv6Address | None:
    """An X-Forwarded-For entry or socket peer as an address, None when it is not one.

    Accepts ``1.2.3.4``, ``1.2.3.4:5678``, ``2001:db8::1`` and ``[2001:db8::1]:5678`` (some load
    balancers append the port), not zones or names. IPv4-mapped IPv6 (``::ffff:1.2.3.4``, how a
    dual-stack socket shows an IPv4 peer) becomes IPv4: IPv4 networks match it, one rate-limit key."""
    host = text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not _PORT.fullmatch(text, end + 1)):
            return None
        host = text[1:end]
    elif text.count(":") == 1:
        host = text[: text.find(":")]
        if not _PORT.fullmatch(text, len(host)):
            return None
    if "%" in host:
        return None  # a zone (fe80::1%eth0) means nothing beyond one host's links
    try:
        address = ip_address(host)
    except ValueError:
        return None
    if isinstance(address, IPv6Address):
        return address.ipv4_mapped or address
    return None if text.startswith("[") else address  # brackets are for IPv6 only


class TrustedProxies:
    """Resolves the client address when some socket peers are trusted proxies."""

    def __init__(self, networks: Sequence[Network], *, cache_size: int = 4096) -> None:
        self._networks = tuple(networks)
        # Behind a proxy the same few peers and client addresses repeat: each verdict is remembered
        # (a dict lookup per hop instead of a parse), and the dict starts over when full.
        self._verdicts: dict[str, Verdict] = {}
        self._cache_size = cache_size

    def _judge(self, text: str) -> Verdict:
        """(the normalized address, whether it is a trusted proxy), None when ``text`` is no address
        (too long to be one: not remembered, so junk entries cannot fill the memory)."""
        if len(text) > MAX_ENTRY_CHARS:
            return None
        address = parse_address(text)
        verdict = None if address is None else (str(address), any(address in net for net in self._networks))
        if len(self._verdicts) >= self._cache_size:
            self._verdicts.clear()
        self._verdicts[text] = verdict
        return verdict

    def client_address(self, scope: Scope) -> str:
        """The right-most X-Forwarded-For entry that is not a trusted proxy, when the socket peer is
        trusted (every header of that name, in order); else the peer.

        A malformed entry stops the walk at the last trusted hop: the address returned is always one
        a trusted proxy vouched for, never a client's string. When every entry is trusted, the
        left-most is the client."""
        client: tuple[str, int] | None = scope.get("client")
        if not client:
            return "unknown"
        verdicts = self._verdicts
        peer = verdicts.get(client[0], _UNSEEN)
        if peer is _UNSEEN:
            peer = self._judge(client[0])
        if peer is None:
            return client[0]
        if not peer[1]:
            return peer[0]  # normalized as when a proxy names it: one client, one budget
        address = peer[0]
        for key, value in reversed(scope["headers"]):
            if key != FORWARDED_FOR:
                continue
            for entry in reversed(value.decode("latin-1").split(",")):
                entry = entry.strip()
                if not entry:
                    continue  # an empty list element (RFC 9110 section 5.6.1): ignored
                hop = verdicts.get(entry, _UNSEEN)
                if hop is _UNSEEN:
                    hop = self._judge(entry)
                if hop is None:
                    return address
                address, trusted = hop
                if not trusted:
                    return address
        return address


def client_address_resolver(trusted_proxies: Sequence[Network]) -> ClientAddress:
    """The one function that tells every route the client address: :func:`peer_address` when no
    proxy is trusted (nothing to check per request), else :meth:`TrustedProxies.client_address`."""
    if not trusted_proxies:
        return peer_address
    return TrustedProxies(trusted_proxies).client_address
