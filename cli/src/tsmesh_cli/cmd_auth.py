"""``login``, ``profile`` and ``tokens``: credentials and API tokens."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any

import typer

from tsmesh_cli import render
from tsmesh_cli.client import Gateway
from tsmesh_cli.context import as_dict, err, examples, handled, out, session
from tsmesh_cli.errors import REFUSED, CliError
from tsmesh_cli.profiles import Profiles, Target, config_path

LOGIN_HELP = (
    "Save a gateway URL and a token as a profile (the config file is mode 0600). Give an API token, or "
    "a tenant, e-mail and password (asked for) to log in and keep the access token."
    + examples(
        "tsmesh login --url http://127.0.0.1:8080 --token tsm_...",
        "tsmesh login --url https://tsmesh.example --tenant acme --email me@acme.io --profile prod",
        "tsmesh --profile prod series cpu_usage",
    )
)

profile_app = typer.Typer(
    help="List, switch and remove saved profiles." + examples("tsmesh profile list", "tsmesh profile use prod")
)
tokens_app = typer.Typer(
    help="Manage the tenant's API tokens (needs a user login or an admin token)."
    + examples(
        "tsmesh tokens list",
        "tsmesh tokens create --name ci --scope write",
        "tsmesh tokens rotate tok_123 --grace 3600",
        "tsmesh tokens revoke tok_123",
    )
)


def login(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Gateway URL (default: the current one).")] = None,
    token: Annotated[str | None, typer.Option(help="An API token (tsm_...).", envvar="TSMESH_LOGIN_TOKEN")] = None,
    tenant: Annotated[str | None, typer.Option(help="Tenant, to log in with a password.")] = None,
    email: Annotated[str | None, typer.Option(help="E-mail, to log in with a password.")] = None,
    profile: Annotated[str, typer.Option(help="Profile name to save under.")] = "default",
) -> None:
    _login(ctx, url, token, tenant, email, profile)


@handled
def _login(
    ctx: typer.Context, url: str | None, token: str | None, tenant: str | None, email: str | None, profile: str
) -> None:
    base = (url or session(ctx).target().url).rstrip("/")
    settings: dict[str, str] = {"url": base}
    if token:
        settings["token"] = token
    elif tenant and email:
        password = os.environ.get("TSMESH_PASSWORD") or typer.prompt("password", hide_input=True)
        with Gateway(Target(base, None, "login")) as gateway:
            answer = as_dict(
                gateway.json("POST", "/v1/auth/login", json={"tenant": tenant, "email": email, "password": password})
            )
        access = answer.get("access_token")
        if not isinstance(access, str):
            raise CliError("the login answer has no access_token")
        settings["token"] = access
        if isinstance(answer.get("refresh_token"), str):
            settings["refresh_token"] = answer["refresh_token"]
    else:
        raise CliError("give --token, or --tenant and --email (the password is asked for)", REFUSED)
    with Gateway(Target(base, settings["token"], "login")) as gateway:
        gateway.send("GET", "/readyz")
    profiles = Profiles(config_path(os.environ))
    profiles.put(profile, settings)
    err().print(f"saved profile {profile!r} for {base} in {profiles.path}", highlight=False)


@profile_app.command("list", help="Saved profiles; * marks the current one." + examples("tsmesh profile list"))
@handled
def profile_list() -> None:
    profiles = Profiles(config_path(os.environ))
    rows = [
        ["*" if name == profiles.current else "", name, (profiles.get(name) or {}).get("url", "")]
        for name in profiles.names()
    ]
    render.rows_table(out(), ["", "profile", "url"], rows)


@profile_app.command("use", help="Make a profile the current one." + examples("tsmesh profile use prod"))
@handled
def profile_use(name: Annotated[str, typer.Argument(help="Profile name.")]) -> None:
    Profiles(config_path(os.environ)).use(name)


@profile_app.command("remove", help="Forget a profile." + examples("tsmesh profile remove old"))
@handled
def profile_remove(name: Annotated[str, typer.Argument(help="Profile name.")]) -> None:
    if not Profiles(config_path(os.environ)).remove(name):
        raise CliError(f"no profile named {name!r}", REFUSED)


@profile_app.command(
    "show", help="Where the next command would go, and where that came from." + examples("tsmesh profile show")
)
@handled
def profile_show(ctx: typer.Context) -> None:
    target = session(ctx).target()
    out().print(
        f"url: {target.url}\ntoken: {'set' if target.token else 'none'}\nfrom: {target.source}", highlight=False
    )


def _token_rows(tokens: list[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            t.get("id"),
            t.get("name"),
            ",".join(t.get("scopes", [])),
            t.get("expires_at") or "",
            "yes" if t.get("revoked") else "",
        ]
        for t in tokens
    ]


_TOKEN_HEADERS = ["id", "name", "scopes", "expires_at", "revoked"]


@tokens_app.command(
    "list", help="The tenant's API tokens." + examples("tsmesh tokens list", "tsmesh tokens list -o json")
)
@handled
def tokens_list(
    ctx: typer.Context, output: Annotated[str, typer.Option("--output", "-o", help="table or json.")] = "table"
) -> None:
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("GET", "/v1/tokens"))
    if output == "json":
        render.as_json(sys.stdout, answer)
    else:
        render.rows_table(out(), _TOKEN_HEADERS, _token_rows(answer.get("tokens", [])))


@tokens_app.command(
    "create",
    help="Create a token; its secret is printed once, on stdout."
    + examples("tsmesh tokens create --name ci --scope write --ttl 86400"),
)
@handled
def tokens_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A name to recognise it by.")],
    scope: Annotated[list[str], typer.Option(help="read, write or admin (repeat).")],
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds (0: no expiry).", min=0)] = 0,
) -> None:
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("POST", "/v1/tokens", json={"name": name, "scopes": scope, "ttl_seconds": ttl}))
    _print_secret(answer)


@tokens_app.command(
    "rotate",
    help="Issue a new secret; the old one keeps working for --grace seconds."
    + examples("tsmesh tokens rotate tok_123 --grace 600"),
)
@handled
def tokens_rotate(
    ctx: typer.Context,
    token_id: Annotated[str, typer.Argument(help="The token's id.")],
    grace: Annotated[int, typer.Option(help="Seconds the old secret stays valid.", min=0)] = 0,
) -> None:
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("POST", f"/v1/tokens/{token_id}/rotate", json={"grace_seconds": grace}))
    _print_secret(answer)


@tokens_app.command("revoke", help="Revoke a token at once." + examples("tsmesh tokens revoke tok_123"))
@handled
def tokens_revoke(ctx: typer.Context, token_id: Annotated[str, typer.Argument(help="The token's id.")]) -> None:
    with session(ctx).gateway() as gateway:
        answer = as_dict(gateway.json("DELETE", f"/v1/tokens/{token_id}"))
    render.rows_table(out(), _TOKEN_HEADERS, _token_rows([answer.get("token", {})]))


def _print_secret(answer: dict[str, Any]) -> None:
    token = answer.get("token", {})
    err().print(
        f"token {token.get('id')} ({','.join(token.get('scopes', []))}); the secret is shown once:", highlight=False
    )
    sys.stdout.write(f"{answer.get('secret')}\n")
