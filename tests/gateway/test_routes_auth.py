"""``tsmesh_gateway.routes.auth`` mounted alone on the collaborators of an in-process gateway in front
of the fake AuthService: each route's translation to its AuthService call and back to JSON, the
client address told to auth, and the refusals that name their field before any call."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import pytest
from gw_fakes import mounted_alone

from tsmesh_gateway.routes.auth import CLIENT_ADDRESS_HEADER, MAX_SECONDS, auth_routes

if TYPE_CHECKING:
    from conftest import Gateway

CLIENT = "10.9.0.3"


@pytest.fixture
async def routes(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with mounted_alone(auth_routes(gateway.app.state.deps), CLIENT) as client:
        yield client


async def test_login_answers_the_token_pair_and_tells_auth_the_client_address(
    gateway: Gateway, routes: httpx.AsyncClient
) -> None:
    answer = await routes.post("/v1/auth/login", json={"tenant": "t", "email": "ok@x", "password": "pw"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["refresh_token"], body["token_type"], body["expires_in"]) == ("r-t", "Bearer", 300)
    method, metadata = gateway.mesh.auth.metadata[-1]
    assert method == "Login" and metadata[CLIENT_ADDRESS_HEADER] == CLIENT


async def test_refresh_and_logout(routes: httpx.AsyncClient) -> None:
    refreshed = await routes.post("/v1/auth/refresh", json={"refresh_token": "r-t2"})
    assert refreshed.status_code == 200 and refreshed.json()["refresh_token"] == "r-t2"
    assert (await routes.post("/v1/auth/refresh", json={"refresh_token": "bogus"})).status_code == 401
    assert (await routes.post("/v1/auth/logout", json={"refresh_token": "r-t2"})).status_code == 204


@pytest.mark.parametrize(
    ("body", "field"),
    [({"email": "ok@x", "password": "pw"}, "tenant"), ({"tenant": "t", "email": 5, "password": "pw"}, "email")],
)
async def test_a_bad_login_body_names_its_field(routes: httpx.AsyncClient, body: dict[str, object], field: str) -> None:
    answer = await routes.post("/v1/auth/login", json=body)
    assert answer.status_code == 400 and answer.json()["details"]["field"] == field


async def test_jwks_is_public_and_cacheable(gateway: Gateway, routes: httpx.AsyncClient) -> None:
    answer = await routes.get("/.well-known/jwks.json")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "public, max-age=60"
    kids = {key["kid"] for key in answer.json()["keys"]}
    assert kids == {key["kid"] for key in gateway.mesh.mint.jwks.keys}
    assert all("" not in key.values() for key in answer.json()["keys"])  # empty members dropped


async def test_api_tokens_are_created_listed_rotated_and_revoked_by_an_admin(
    gateway: Gateway, routes: httpx.AsyncClient
) -> None:
    admin = gateway.bearer("admin")
    created = await routes.post("/v1/tokens", json={"name": "ci", "scopes": ["read"], "ttl_seconds": 60}, headers=admin)
    assert created.status_code == 201, created.text
    token_id = created.json()["token"]["id"]
    assert created.json()["secret"].startswith("tsm_") and gateway.mesh.auth.created[-1].ttl_seconds == 60
    listed = await routes.get("/v1/tokens", headers=admin)
    assert token_id in {t["id"] for t in listed.json()["tokens"]}
    rotated = await routes.post(f"/v1/tokens/{token_id}/rotate", json={"grace_seconds": 5}, headers=admin)
    assert rotated.status_code == 200 and rotated.json()["secret"].startswith("tsm_")
    revoked = await routes.delete(f"/v1/tokens/{token_id}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["token"]["revoked"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": ["root"]}, "scopes"),
        ({"name": "x", "scopes": ["read"], "ttl_seconds": MAX_SECONDS + 1}, "ttl_seconds"),
    ],
)
async def test_a_bad_token_request_names_its_field_before_calling_auth(
    gateway: Gateway, routes: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    before = len(gateway.mesh.auth.created)
    answer = await routes.post("/v1/tokens", json=body, headers=gateway.bearer("admin"))
    assert answer.status_code == 400 and answer.json()["details"]["field"] == field
    assert len(gateway.mesh.auth.created) == before


async def test_token_routes_need_the_admin_scope_and_a_bounded_id(gateway: Gateway, routes: httpx.AsyncClient) -> None:
    assert (await routes.get("/v1/tokens", headers=gateway.bearer("read write"))).status_code == 403
    too_long = await routes.delete("/v1/tokens/" + "x" * 129, headers=gateway.bearer("admin"))
    assert too_long.status_code == 400 and too_long.json()["details"]["field"] == "token_id"
