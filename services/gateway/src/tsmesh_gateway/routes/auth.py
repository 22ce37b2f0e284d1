"""``/v1/auth/*``, ``/v1/tokens`` and ``/.well-known/jwks.json``: translated to AuthService calls."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from tsmesh.v1 import auth_pb2

from tsmesh_common.errors import InvalidArgument
from tsmesh_common.identity import login_identity
from tsmesh_gateway.bodies import JSONResponse, json_object, parse_json
from tsmesh_gateway.convert import _int, _str
from tsmesh_gateway.deps import Deps, endpoint

SCOPES = ("read", "write", "admin")
MAX_SECONDS = 10 * 366 * 86_400
CLIENT_ADDRESS_HEADER = "x-client-address"


def tokens_to_json(pair: auth_pb2.TokenPair) -> dict[str, Any]:
    return {
        "access_token": pair.access_token,
        "refresh_token": pair.refresh_token,
        "token_type": pair.token_type or "Bearer",
        "expires_in": pair.expires_in,
    }


def api_token_to_json(token: auth_pb2.ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "scopes": list(token.scopes),
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "last_used_at": token.last_used_at,
        "revoked": token.revoked,
    }


def _token_id(request: Request) -> str:
    token_id = str(request.path_params["token_id"])
    if not 0 < len(token_id) <= 128:
        raise InvalidArgument("token_id", "must be 1 to 128 characters")
    return token_id


def _from_client(deps: Deps, request: Request) -> tuple[tuple[str, str], ...]:
    """Tell auth who the client is, so its per-address login throttle and audit see the real caller
    (behind trusted proxies too, ADR 0451)."""
    return ((CLIENT_ADDRESS_HEADER, deps.client_address(request.scope)[:64]),)


def auth_routes(deps: Deps) -> list[Route]:
    """The authentication routes bound to ``deps``."""
    stub = deps.upstreams.auth_stub
    auth = deps.upstreams.auth

    @endpoint
    async def login(request: Request) -> Response:
        body = json_object(await deps.json(request))
        tenant = _str(body, "tenant", "tenant", max_len=256)
        email = _str(body, "email", "email", max_len=320)
        headers = await deps.limit_anonymous(request, "auth", identity=login_identity(tenant, email))
        password = _str(body, "password", "password", max_len=1024)
        answer = await auth.unary(
            stub.Login,
            auth_pb2.LoginRequest(tenant=tenant, email=email, password=password),
            authorization=None,
            extra_metadata=_from_client(deps, request),
        )
        return JSONResponse(tokens_to_json(answer.tokens), headers=headers)

    @endpoint
    async def refresh(request: Request) -> Response:
        body = json_object(await deps.json(request))
        refresh_token = _str(body, "refresh_token", "refresh_token", max_len=8192)
        headers = await deps.limit_anonymous(request, "auth")
        answer = await auth.unary(
            stub.Refresh,
            auth_pb2.RefreshRequest(refresh_token=refresh_token),
            authorization=None,
            extra_metadata=_from_client(deps, request),
        )
        return JSONResponse(tokens_to_json(answer.tokens), headers=headers)

    @endpoint
    async def logout(request: Request) -> Response:
        body = json_object(await deps.json(request))
        refresh_token = _str(body, "refresh_token", "refresh_token", max_len=8192)
        headers = await deps.limit_anonymous(request, "auth")
        await auth.unary(
            stub.Logout,
            auth_pb2.LogoutRequest(refresh_token=refresh_token),
            authorization=None,
            extra_metadata=_from_client(deps, request),
        )
        return Response(status_code=204, headers=headers)

    @endpoint
    async def jwks(request: Request) -> Response:
        headers = await deps.limit_anonymous(request, "auth")
        answer = await auth.unary(stub.GetJwks, auth_pb2.GetJwksRequest(), authorization=None, idempotent=True)
        keys = [{k: v for k, v in _jwk(key).items() if v} for key in answer.keys]
        headers["Cache-Control"] = "public, max-age=60"
        return JSONResponse({"keys": keys}, headers=headers)

    @endpoint
    async def create_token(request: Request) -> Response:
        caller = await deps.authorize(request, "auth", "admin")
        body = json_object(await deps.json(request))
        scopes = body.get("scopes")
        if not isinstance(scopes, list) or not scopes or not all(s in SCOPES for s in scopes):
            raise InvalidArgument("scopes", "must be a non-empty array of read, write, admin")
        ttl = _int(body, "ttl_seconds", "ttl_seconds", required=False)
        if not 0 <= ttl <= MAX_SECONDS:
            raise InvalidArgument("ttl_seconds", f"must be between 0 and {MAX_SECONDS}")
        request_pb = auth_pb2.CreateApiTokenRequest(
            name=_str(body, "name", "name", max_len=200), scopes=scopes, ttl_seconds=ttl
        )
        answer = await auth.unary(stub.CreateApiToken, request_pb, authorization=caller.authorization)
        return JSONResponse(
            {"token": api_token_to_json(answer.token), "secret": answer.secret}, status_code=201, headers=caller.headers
        )

    @endpoint
    async def list_tokens(request: Request) -> Response:
        caller = await deps.authorize(request, "auth", "admin")
        answer = await auth.unary(
            stub.ListApiTokens, auth_pb2.ListApiTokensRequest(), authorization=caller.authorization, idempotent=True
        )
        return JSONResponse({"tokens": [api_token_to_json(t) for t in answer.tokens]}, headers=caller.headers)

    @endpoint
    async def rotate_token(request: Request) -> Response:
        caller = await deps.authorize(request, "auth", "admin")
        token_id = _token_id(request)
        raw = await deps.body(request)
        grace = 0
        if raw.strip():
            grace = _int(
                json_object(parse_json(raw, deps.cfg.max_json_depth)), "grace_seconds", "grace_seconds", required=False
            )
            if not 0 <= grace <= MAX_SECONDS:
                raise InvalidArgument("grace_seconds", f"must be between 0 and {MAX_SECONDS}")
        answer = await auth.unary(
            stub.RotateApiToken,
            auth_pb2.RotateApiTokenRequest(id=token_id, grace_seconds=grace),
            authorization=caller.authorization,
        )
        return JSONResponse({"token": api_token_to_json(answer.token), "secret": answer.secret}, headers=caller.headers)

    @endpoint
    async def revoke_token(request: Request) -> Response:
        caller = await deps.authorize(request, "auth", "admin")
        answer = await auth.unary(
            stub.RevokeApiToken,
            auth_pb2.RevokeApiTokenRequest(id=_token_id(request)),
            authorization=caller.authorization,
        )
        return JSONResponse({"token": api_token_to_json(answer.token)}, headers=caller.headers)

    async def tokens(request: Request) -> Response:
        return await (list_tokens(request) if request.method == "GET" else create_token(request))

    return [
        Route("/v1/auth/login", login, methods=["POST"]),
        Route("/v1/auth/refresh", refresh, methods=["POST"]),
        Route("/v1/auth/logout", logout, methods=["POST"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/v1/tokens", tokens, methods=["GET", "POST"]),
        Route("/v1/tokens/{token_id}/rotate", rotate_token, methods=["POST"]),
        Route("/v1/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    ]


def _jwk(key: auth_pb2.Jwk) -> dict[str, str]:
    return {"kty": key.kty, "kid": key.kid, "alg": key.alg, "use": key.use, "crv": key.crv, "x": key.x, "y": key.y}
