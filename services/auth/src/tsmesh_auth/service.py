"""The gRPC ``tsmesh.v1.AuthService``: thin handlers over sessions, keys, API tokens and the audit log."""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter
from tsmesh.v1 import auth_pb2, auth_pb2_grpc

from tsmesh_auth.api_tokens import Actor, ApiTokenRecord, ApiTokenStore, CachedToken
from tsmesh_auth.audit import AuditEvent, AuditLog
from tsmesh_auth.callers import ServiceCallers
from tsmesh_auth.keys import KeyRing
from tsmesh_auth.revocations import RevocationList
from tsmesh_auth.sessions import Sessions, Tokens
from tsmesh_common.audit import PERMISSION_DENIED_ACTION
from tsmesh_common.authn import API_TOKEN_PREFIX, MAX_TOKEN_LENGTH, Authenticator
from tsmesh_common.context import Principal, current_principal
from tsmesh_common.errors import InvalidArgument, PermissionDenied, Unauthenticated

SERVICE_NAME = "tsmesh.v1.AuthService"
PUBLIC_METHODS = frozenset(
    f"/{SERVICE_NAME}/{name}" for name in ("Login", "Refresh", "Logout", "GetJwks", "Introspect", "ListRevocations")
)
DEFAULT_REVOCATION_PAGE = 10_000
INACTIVE = auth_pb2.IntrospectResponse(active=False)
INTROSPECTIONS = Counter("tsmesh_auth_introspections_total", "Introspect answers", ["kind", "active"])

Context = Any


def _pair(tokens: Tokens) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access.token,
        refresh_token=tokens.refresh_token,
        token_type="Bearer",  # noqa: S106  # nosec B106 # the scheme name
        expires_in=tokens.expires_in,
    )


def _api_token(record: ApiTokenRecord) -> auth_pb2.ApiToken:
    return auth_pb2.ApiToken(
        id=record.id,
        name=record.name,
        scopes=record.scopes,
        created_at=int(record.created_at.timestamp()),
        expires_at=int(record.expires_at.timestamp()) if record.expires_at else 0,
        last_used_at=int(record.last_used_at.timestamp()) if record.last_used_at else 0,
        revoked=record.revoked,
    )


def introspected(entry: CachedToken) -> auth_pb2.IntrospectResponse:
    return auth_pb2.IntrospectResponse(
        active=True,
        tenant_id=entry.tenant_id,
        subject=entry.subject,
        scopes=entry.scopes,
        expires_at=int(entry.expires_at or 0),
        kind=auth_pb2.TOKEN_KIND_API_TOKEN,
        token_id=entry.token_id,
    )


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    """Every RPC of AuthService; the tenant of admin calls is always the caller's."""

    def __init__(
        self,
        sessions: Sessions,
        keyring: KeyRing,
        tokens: ApiTokenStore,
        audit: AuditLog,
        authenticator: Authenticator,
        revocations: RevocationList,
        callers: ServiceCallers,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._tokens = tokens
        self._audit = audit
        self._authenticator = authenticator
        self._revocations = revocations
        self._callers = callers
        self._api_active = INTROSPECTIONS.labels("api_token", "true")
        self._jwt_active = INTROSPECTIONS.labels("jwt", "true")
        self._inactive = INTROSPECTIONS.labels("any", "false")

    async def Login(self, request: auth_pb2.LoginRequest, context: Context) -> auth_pb2.LoginResponse:
        tokens = await self._sessions.login(
            request.tenant, request.email, request.password, self._callers.client_address(context)
        )
        return auth_pb2.LoginResponse(tokens=_pair(tokens))

    async def Refresh(self, request: auth_pb2.RefreshRequest, context: Context) -> auth_pb2.RefreshResponse:
        tokens = await self._sessions.refresh(request.refresh_token, self._callers.client_address(context))
        return auth_pb2.RefreshResponse(tokens=_pair(tokens))

    async def Logout(self, request: auth_pb2.LogoutRequest, context: Context) -> auth_pb2.LogoutResponse:
        await self._sessions.logout(request.refresh_token, self._callers.client_address(context))
        return auth_pb2.LogoutResponse()

    async def GetJwks(self, request: auth_pb2.GetJwksRequest, context: Context) -> auth_pb2.GetJwksResponse:
        keys = [auth_pb2.Jwk(**{k: v for k, v in jwk.items() if k in _JWK_FIELDS}) for jwk in self._keyring.jwks()]
        return auth_pb2.GetJwksResponse(keys=keys)

    async def Introspect(self, request: auth_pb2.IntrospectRequest, context: Context) -> auth_pb2.IntrospectResponse:
        token = request.token
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii():
            self._inactive.inc()
            return INACTIVE
        if token.startswith(API_TOKEN_PREFIX):
            entry = await self._tokens.lookup(token)
            if entry is None:
                self._inactive.inc()
                return INACTIVE
            self._api_active.inc()
            return entry.view if entry.view is not None else introspected(entry)
        try:
            principal = await self._authenticator.authenticate(token)
        except Unauthenticated:
            self._inactive.inc()
            return INACTIVE
        self._jwt_active.inc()
        return auth_pb2.IntrospectResponse(
            active=True,
            tenant_id=principal.tenant_id,
            subject=principal.subject,
            scopes=sorted(principal.scopes),
            expires_at=int(principal.expires_at or 0),
            kind=auth_pb2.TOKEN_KIND_ACCESS_JWT,
            token_id=principal.token_id,
        )

    async def _admin(self, context: Context, action: str) -> tuple[Principal, Actor]:
        principal = current_principal()
        actor = Actor(principal.subject, self._callers.client_address(context), principal.token_id)
        try:
            principal.require("admin")
        except PermissionDenied:
            await self._denied(principal, actor, action, "scope admin required")
            raise
        return principal, actor

    async def _denied(self, principal: Principal, actor: Actor, action: str, detail: str) -> None:
        await self._audit.append(
            AuditEvent("permission_denied", action, principal.tenant_id, actor.subject, actor.client_address, detail)
        )

    async def CreateApiToken(
        self, request: auth_pb2.CreateApiTokenRequest, context: Context
    ) -> auth_pb2.CreateApiTokenResponse:
        principal, actor = await self._admin(context, "CreateApiToken")
        record, secret = await self._tokens.create(
            principal.tenant_id, request.name, list(request.scopes), request.ttl_seconds, actor
        )
        return auth_pb2.CreateApiTokenResponse(token=_api_token(record), secret=secret)

    async def ListApiTokens(
        self, request: auth_pb2.ListApiTokensRequest, context: Context
    ) -> auth_pb2.ListApiTokensResponse:
        principal, _ = await self._admin(context, "ListApiTokens")
        records = await self._tokens.list(principal.tenant_id)
        return auth_pb2.ListApiTokensResponse(tokens=[_api_token(r) for r in records])

    async def RotateApiToken(
        self, request: auth_pb2.RotateApiTokenRequest, context: Context
    ) -> auth_pb2.RotateApiTokenResponse:
        principal, actor = await self._admin(context, "RotateApiToken")
        token_id = _token_id(request.id)
        try:
            record, secret = await self._tokens.rotate(principal.tenant_id, token_id, request.grace_seconds, actor)
        except PermissionDenied:
            await self._denied(principal, actor, "RotateApiToken", f"token_id={token_id}")
            raise
        return auth_pb2.RotateApiTokenResponse(token=_api_token(record), secret=secret)

    async def RevokeApiToken(
        self, request: auth_pb2.RevokeApiTokenRequest, context: Context
    ) -> auth_pb2.RevokeApiTokenResponse:
        principal, actor = await self._admin(context, "RevokeApiToken")
        token_id = _token_id(request.id)
        try:
            record = await self._tokens.revoke(principal.tenant_id, token_id, actor)
        except PermissionDenied:
            await self._denied(principal, actor, "RevokeApiToken", f"token_id={token_id}")
            raise
        return auth_pb2.RevokeApiTokenResponse(token=_api_token(record))

    async def ReportAuditEvent(
        self, request: auth_pb2.ReportAuditEventRequest, context: Context
    ) -> auth_pb2.ReportAuditEventResponse:
        principal = current_principal()
        address = self._callers.client_address(context)
        reporter = self._callers.identify(context.invocation_metadata())
        if not reporter:
            # a service reports what it saw on a caller's behalf: it must prove which service it is
            raise Unauthenticated("ReportAuditEvent needs a service credential")
        if not request.action or len(request.action) > 100:
            raise InvalidArgument("action", "is required (at most 100 characters)")
        if "admin" not in principal.scopes and request.action != PERMISSION_DENIED_ACTION:
            # any caller may report its own refusals; only admins may report other events
            raise PermissionDenied(f"only {PERMISSION_DENIED_ACTION!r} may be reported without scope 'admin'")
        if len(request.outcome) > 100:
            raise InvalidArgument("outcome", "must be at most 100 characters")
        if len(request.detail) > 1000:
            raise InvalidArgument("detail", "must be at most 1000 characters")
        address = request.client_address[:64] or address
        await self._audit.append(
            AuditEvent(
                action=request.action,
                outcome=request.outcome or "reported",
                tenant_id=principal.tenant_id,
                actor=principal.subject,
                client_address=address,
                detail=request.detail,
                reporter=reporter,
            )
        )
        return auth_pb2.ReportAuditEventResponse()

    async def ListRevocations(
        self, request: auth_pb2.ListRevocationsRequest, context: Context
    ) -> auth_pb2.ListRevocationsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative")
        if len(request.page_token) > 256:
            raise InvalidArgument("page_token", "must be at most 256 characters")
        size = min(request.page_size or DEFAULT_REVOCATION_PAGE, DEFAULT_REVOCATION_PAGE)
        entries = await self._revocations.unexpired(request.page_token, size)
        return auth_pb2.ListRevocationsResponse(
            revocations=[auth_pb2.Revocation(token_id=t, expires_at=int(until) + 1) for t, until in entries],
            next_page_token=entries[-1][0] if len(entries) == size else "",
        )


_JWK_FIELDS = frozenset({"kty", "kid", "alg", "use", "crv", "x", "y"})


def _token_id(value: str) -> str:
    token_id = value.strip()
    if not token_id or len(token_id) > 64:
        raise InvalidArgument("id", "is required")
    if not token_id.isalnum():
        raise PermissionDenied("no such token in your tenant")
    return token_id
