"""The principal cache: who is calling, from the bearer token, with verified credentials (and
refusals that cannot turn valid) remembered briefly so hot paths skip token checks."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import re
import time
from collections import OrderedDict
from collections.abc import Callable

import orjson
from prometheus_client import Counter

from tsmesh_common.authn import ALLOWED_ALGORITHMS, API_TOKEN_PREFIX, MAX_TOKEN_LENGTH, Authenticator
from tsmesh_common.context import Principal
from tsmesh_common.errors import Unauthenticated


def authorization_token(header: str | None) -> str:
    """The token of ``Authorization: Bearer <t>`` or ``Token <t>`` (InfluxDB style)."""
    if not header:
        raise Unauthenticated("authentication required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() not in ("bearer", "token") or not token:
        raise Unauthenticated("malformed authorization header")
    return token


AUTH_REFUSALS_CACHED = Counter(
    "tsmesh_gateway_auth_refusals_cached_total", "Credentials refused from the negative cache, without asking auth"
)
_JWT = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_API_TOKEN = re.compile(r"tsm_[A-Za-z0-9]+_[A-Za-z0-9_-]+")


def malformed(token: str) -> bool:
    """True when ``token`` can never authenticate, whatever auth knows: neither an API token
    (``tsm_<id>_<secret>``) nor a compact JWS whose header names an allowed algorithm and a key id."""
    if not token.isascii() or len(token) > MAX_TOKEN_LENGTH:
        return True
    if token.startswith(API_TOKEN_PREFIX):
        return _API_TOKEN.fullmatch(token) is None
    if _JWT.fullmatch(token) is None:
        return True
    encoded = token.partition(".")[0]
    try:
        header = orjson.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, orjson.JSONDecodeError):
        return True
    return (
        not isinstance(header, dict)
        or header.get("alg") not in ALLOWED_ALGORITHMS
        or not isinstance(header.get("kid"), str)
    )


class PrincipalCache:
    """Verified credentials for a short while, so hot paths skip token checks; revocations evict.

    Keyed on the token itself (parsed out of the ``Authorization`` value on HTTP, whatever the
    scheme's case or the surrounding whitespace; as sent on the stream), so variants of one header
    share an entry. At most ``size`` entries: when full, the sixteenth of them authenticated
    longest ago is dropped (an entry moves to the end when its token is checked again), never the
    whole cache.
    Refusals are remembered too (negative cache by token digest, ``refused_ttl`` seconds, at most
    ``refused_size`` entries, oldest evicted first), but only those that cannot turn into a success:
    malformed tokens (:func:`malformed`) and API tokens auth reported unknown, expired or revoked.
    A well-formed JWT that fails is never remembered (its key may be one auth published a moment
    ago, fetched on the next try), nor is an auth outage. A freshly created token is a string
    nobody presented before, so it is never in the cache.
    """

    def __init__(
        self,
        authenticator: Authenticator,
        ttl: float = 5.0,
        size: int = 50_000,
        clock: Callable[[], float] = time.time,
        *,
        refused_ttl: float = 5.0,
        refused_size: int = 10_000,
    ) -> None:
        self._authenticator = authenticator
        self._ttl = ttl
        self._size = size
        self._clock = clock
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._refused_ttl = refused_ttl
        self._refused_size = refused_size
        self._refused: OrderedDict[bytes, tuple[str, float]] = OrderedDict()  # token digest -> (message, until)
        self._flights: dict[str, asyncio.Future[Principal]] = {}  # checks with auth in progress, by token
        authenticator.on_revocation(self.evict_token_id)

    def cached(self, token: str) -> Principal | None:
        """The principal remembered for ``token``, without awaiting anything."""
        entry = self._entries.get(token)
        if entry is not None and entry[1] > self._clock():
            return entry[0]
        return None

    async def authenticate_header(self, header: str | None) -> Principal:
        """The principal of an ``Authorization`` value (``Bearer <t>`` or ``Token <t>``, any case)."""
        return await self.authenticate(authorization_token(header))

    async def authenticate(self, token: str) -> Principal:
        """The principal of a bare token (the stream's first message). Concurrent checks of one
        token share one (when a hot token's entry expires, its in-flight requests ask auth once)."""
        principal = self.cached(token)
        if principal is not None:
            return principal
        flight = self._flights.get(token)
        if flight is None:
            flight = self._flights[token] = asyncio.ensure_future(self._check(token))
            flight.add_done_callback(lambda done: self._landed(token, done))
        try:
            return await asyncio.shield(flight)
        except Unauthenticated as exc:  # a fresh exception per waiter: re-raising one would grow its traceback
            raise Unauthenticated(exc.message) from None

    def _landed(self, token: str, flight: asyncio.Future[Principal]) -> None:
        if self._flights.get(token) is flight:
            del self._flights[token]
        if not flight.cancelled():
            flight.exception()  # retrieved: a check every waiter gave up on logs nothing

    async def _check(self, token: str) -> Principal:
        now = self._clock()
        digest = hashlib.blake2b(token.encode("utf-8", "backslashreplace"), digest_size=16).digest()
        refused = self._refused.get(digest)
        if refused is not None:
            if refused[1] > now:
                AUTH_REFUSALS_CACHED.inc()
                raise Unauthenticated(refused[0])  # a fresh exception: re-raising one would grow its traceback
            del self._refused[digest]
        if malformed(token):
            self._remember_refusal(digest, "invalid token", now)
            raise Unauthenticated("invalid token")
        try:
            principal = await self._authenticator.authenticate(token)
        except Unauthenticated as exc:
            if token.startswith(API_TOKEN_PREFIX):
                self._remember_refusal(digest, exc.message, now)
            raise
        until = now + self._ttl
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        entries = self._entries
        entries.pop(token, None)  # re-inserted last: the dict's order is the order of authentication
        if len(entries) >= self._size:  # the oldest 1/16 go, not everyone's
            for old in list(itertools.islice(entries, max(1, self._size // 16))):
                del entries[old]
        entries[token] = (principal, until)
        return principal

    def _remember_refusal(self, digest: bytes, message: str, now: float) -> None:
        self._refused[digest] = (message, now + self._refused_ttl)
        while len(self._refused) > self._refused_size:
            self._refused.popitem(last=False)

    def evict_token_id(self, token_id: str) -> None:
        for credential, (principal, _) in list(self._entries.items()):
            if principal.token_id == token_id:
                del self._entries[credential]
