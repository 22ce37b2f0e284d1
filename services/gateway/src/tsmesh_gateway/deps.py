"""What every route needs, built once per worker by the composition root and passed in."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tsmesh_common.audit import AuditReporter
from tsmesh_common.context import Principal
from tsmesh_common.errors import PermissionDenied
from tsmesh_gateway.bodies import BodyWatchdog, read_body, read_json
from tsmesh_gateway.clientaddr import ClientAddress, client_address_resolver
from tsmesh_gateway.config import GatewayConfig
from tsmesh_gateway.guard import PrincipalCache, Rate, RouteLimits, authorization_token, principal_key, rate_headers
from tsmesh_gateway.http_errors import to_http_error
from tsmesh_gateway.microcache import MicroCache
from tsmesh_gateway.upstreams import Upstreams

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(slots=True)
class Caller:
    """An authenticated request: principal, the header to forward upstream, the rate-limit decision
    its ``RateLimit-*`` headers describe (None when limits are off)."""

    principal: Principal
    authorization: str
    rate: Rate | None

    @property
    def headers(self) -> dict[str, str]:
        return rate_headers(self.rate) if self.rate is not None else {}


@dataclass
class Deps:
    """The per-worker collaborators of the HTTP routes."""

    cfg: GatewayConfig
    upstreams: Upstreams
    principals: PrincipalCache
    limits: RouteLimits
    cache: MicroCache
    watchdog: BodyWatchdog = field(default_factory=BodyWatchdog)
    # The client address of an ASGI scope, for every route, the fast path and audit (ADR 0451).
    client_address: ClientAddress = field(init=False, repr=False)
    # A token refused for lacking a route's scope is reported to auth's audit log, as the gRPC
    # services' interceptors report theirs.
    audit: AuditReporter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.client_address = client_address_resolver(self.cfg.trusted_proxies)
        self.audit = AuditReporter(self.upstreams.auth.channel)

    async def authorize(self, request: Request, route_class: str, scope: str | None) -> Caller:
        """Authenticate the bearer token, check ``scope``, then spend the route class budgets."""
        return await self.authorize_header(
            request.headers.get("authorization"), self.client_address(request.scope), route_class, scope
        )

    async def authorize_header(self, header: str | None, address: str, route_class: str, scope: str | None) -> Caller:
        """:meth:`authorize` from the raw ``Authorization`` value and client address (ASGI fast path).

        The per-address budget is spent first, so refused floods never reach authentication. The
        common case (limits covered by local leases, the token cached) awaits nothing."""
        limits = self.limits
        spent = None
        if limits.enabled:
            spent = limits.address_now(route_class, address) or await limits.check_address(route_class, address)
        principal = self.principals.cached(authorization_token(header)) if header is not None else None
        if principal is None:
            principal = await self.principals.authenticate_header(header)
        if scope is not None:
            try:
                principal.require(scope)
            except PermissionDenied as refused:
                self.audit.permission_denied(header or "", f"gateway {route_class}", str(refused), address)
                raise
        if spent is not None:
            identity = principal_key(principal)
            spent = limits.identity_now(route_class, identity, spent) or await limits.check_identity(
                route_class, identity, spent
            )
        assert header is not None
        return Caller(principal, header, spent)

    async def limit_anonymous(self, request: Request, route_class: str, identity: str | None = None) -> dict[str, str]:
        return await self.limits.check(route_class, address=self.client_address(request.scope), identity=identity)

    async def json(self, request: Request) -> Any:
        cfg = self.cfg
        return await read_json(
            request,
            max_bytes=cfg.max_body_bytes,
            timeout=cfg.body_timeout_seconds,
            max_depth=cfg.max_json_depth,
            watchdog=self.watchdog,
        )

    async def body(self, request: Request) -> bytes:
        return await read_body(
            request, max_bytes=self.cfg.max_body_bytes, timeout=self.cfg.body_timeout_seconds, watchdog=self.watchdog
        )


def endpoint(fn: Endpoint) -> Endpoint:
    """Turn any exception of a route into the JSON error response of :mod:`http_errors`."""

    async def wrapper(request: Request) -> Response:
        try:
            return await fn(request)
        except Exception as exc:  # noqa: BLE001 - mapped to a JSON error body, 500 only for the unknown
            error = to_http_error(exc)
            return Response(error.body(), error.status, headers=error.headers, media_type="application/json")

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper
