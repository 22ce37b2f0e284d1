"""The ``tsmesh`` command tree; global options choose the gateway, the token and the profile."""

from __future__ import annotations

from typing import Annotated

import typer

from tsmesh_cli import cmd_admin, cmd_auth, cmd_read, cmd_write
from tsmesh_cli.context import Session, examples

app = typer.Typer(
    name="tsmesh",
    help="Talk to a tsmesh gateway: write, query, tail, manage tokens and the data lifecycle.\n\n"
    "The gateway and token come from --url/--token, TSMESH_GATEWAY_URL/TSMESH_TOKEN, a saved profile "
    "(`tsmesh login`), or `make run`'s .tsmesh/dev.env. Exit codes: 0 ok, 2 usage, 3 HTTP 401, 4 403, "
    "5 404, 6 400/409/413/422, 7 429, 8 5xx or unreachable, 9 some points rejected, 130 interrupted."
    + examples("tsmesh write points.lp", "tsmesh query cpu_usage --start -1h", "tsmesh --profile prod tail cpu_usage"),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Option(help="Gateway URL (else TSMESH_GATEWAY_URL, the profile, dev.env).")
    ] = None,
    token: Annotated[str | None, typer.Option(help="Bearer token (else TSMESH_TOKEN, the profile, dev.env).")] = None,
    profile: Annotated[str | None, typer.Option(help="A saved profile (else TSMESH_PROFILE, the current one).")] = None,
) -> None:
    """Global options."""
    ctx.obj = Session(url=url, token=token, profile=profile)


app.command(help=cmd_auth.LOGIN_HELP)(cmd_auth.login)
app.add_typer(cmd_auth.profile_app, name="profile")
app.add_typer(cmd_auth.tokens_app, name="tokens")
app.command(help=cmd_write.HELP)(cmd_write.write)
app.command(help=cmd_read.QUERY_HELP)(cmd_read.query)
app.command(help=cmd_read.SERIES_HELP)(cmd_read.series)
app.command(help=cmd_read.LABELS_HELP)(cmd_read.labels)
app.command(help=cmd_read.TAIL_HELP)(cmd_read.tail)
app.add_typer(cmd_admin.retention_app, name="retention")
app.command(help=cmd_admin.DELETE_HELP)(cmd_admin.delete)
app.command(help=cmd_admin.EXPORT_HELP)(cmd_admin.export)
app.command(help=cmd_admin.CARDINALITY_HELP)(cmd_admin.cardinality)
