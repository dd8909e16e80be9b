"""``rf tokens``: personal tokens, each shown once (rf keeps only its SHA-256).

A token signs you in to an rf server as yourself (``rf login URL``, or
``RF_SERVER_URL`` + ``RF_TOKEN`` in CI). Revoking one refuses it from the next
request on. Admins may manage other users' tokens with ``--user``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rf.cli.app import JsonOption, backend

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Personal tokens: sign in to an rf server as yourself.")

UserOption = Annotated[str | None, typer.Option("--user", "-u", help="Another user's (admins).")]


@app.command("create")
def create(
    name: Annotated[str, typer.Option("--name", "-n", help="What the token is for, e.g. laptop or ci.")] = "default",
    user: UserOption = None,
    json_out: JsonOption = False,
) -> None:
    """Create a personal token. It is printed once: store it where you will read it (rf login)."""
    from rf.cli.output import err, out, print_json

    with backend() as b:
        created = b.create_token(name, user)
    if json_out:
        print_json(created)
        return
    out.print(created.secret)
    err.print(f"token [bold]{created.token.name}[/bold] of {created.token.user} ({created.token.id}) — shown once, "
              "rf keeps only its hash")


@app.command("list")
def list_tokens(
    user: UserOption = None,
    all_users: Annotated[bool, typer.Option("--all-users", help="Every user's tokens (admins).")] = False,
    revoked: Annotated[bool, typer.Option("--revoked", help="Include revoked tokens.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Personal tokens (never the tokens: their first characters, to recognise them)."""
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, when

    with backend() as b:
        tokens = b.list_tokens(user, all_users, revoked)
    if json_out:
        print_json(tokens)
        return
    if not tokens:
        out.print("no personal tokens — create one: rf tokens create --name laptop")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("user", "name", "token", "id", "created (UTC)", "by", "revoked (UTC)"):
        table.add_column(column)
    for t in tokens:
        table.add_row(t.user, t.name, f"{t.prefix}…", t.id, when(t.created_at), t.created_by,
                      when(t.revoked_at) if t.revoked_at else "")
    out.print(fit_table(table, flex=("by",), optional=("id", "by", "created (UTC)")))


@app.command("revoke")
def revoke(
    token: Annotated[str, typer.Argument(help="The token's id (or name, among your own).")],
    json_out: JsonOption = False,
) -> None:
    """Revoke a personal token: it is refused from the next request on."""
    from rf.cli.output import print_json, success

    with backend() as b:
        revoked = b.revoke_token(token)
    if json_out:
        print_json(revoked)
        return
    success(f"revoked token [bold]{revoked.name}[/bold] of {revoked.user} ({revoked.id})")
