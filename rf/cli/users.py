"""``rf users``: who may use this rf server, and with which role.

Roles, least to most (each may do what the ones before it may): viewer reads;
developer edits staging, deploys, tests, runs evals; publisher plans, approves,
publishes, promotes, rolls back; admin manages users, credentials, providers,
data sources and endpoint keys. The workspace owner (the server's own token, or a
command run in-process) is always an admin.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rf.cli.app import JsonOption, backend

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Users and roles: who may use this server (viewer, developer, publisher, admin).")

RoleArg = Annotated[str, typer.Argument(help="viewer, developer, publisher or admin.")]


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="The user's name (what their changes are recorded under).")],
    role: Annotated[str, typer.Option("--role", "-r", help="viewer, developer, publisher or admin.")] = "developer",
    json_out: JsonOption = False,
) -> None:
    """Add a user (admins). Their first personal token is printed once: hand it to them."""
    from rf.cli.output import err, out, print_json

    with backend() as b:
        created = b.add_user(name, role)
    if json_out:
        print_json(created)
        return
    out.print(created.token)
    err.print(f"user [bold]{created.name}[/bold] ({created.role}) — their token is shown once, rf keeps only "
              "its hash")
    err.print("[dim]they sign in with: rf login URL (and paste the token); CI: RF_SERVER_URL=URL RF_TOKEN=TOKEN[/dim]")


@app.command("list")
def list_users(json_out: JsonOption = False) -> None:
    """Users and their roles (the workspace owner first)."""
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, when

    with backend() as b:
        users = b.list_users()
    if json_out:
        print_json(users)
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("name", "role", "tokens", "added (UTC)", "by"):
        table.add_column(column)
    for u in users:
        table.add_row(u.name + (" (owner)" if u.owner else ""), u.role, "server token" if u.owner else str(u.tokens),
                      when(u.created_at) if u.created_at else "", u.created_by)
    out.print(fit_table(table, flex=("by",), optional=("by", "added (UTC)")))


@app.command("remove")
def remove(
    name: Annotated[str, typer.Argument(help="The user to remove.")],
    json_out: JsonOption = False,
) -> None:
    """Remove a user (admins): their tokens stop working at once; the audit log keeps their past."""
    from rf.cli.output import print_json, success

    with backend() as b:
        user = b.remove_user(name)
    if json_out:
        print_json(user)
        return
    success(f"removed user [bold]{user.name}[/bold] ({user.role}); their tokens are revoked")


@app.command("set-role")
def set_role(
    name: Annotated[str, typer.Argument(help="The user.")],
    role: RoleArg,
    json_out: JsonOption = False,
) -> None:
    """Change a user's role (admins), from their next request on."""
    from rf.cli.output import print_json, success

    with backend() as b:
        user = b.set_user_role(name, role)
    if json_out:
        print_json(user)
        return
    success(f"[bold]{user.name}[/bold] is now {user.role}")


@app.command("whoami")
def whoami(json_out: JsonOption = False) -> None:
    """Who this server takes you for: your name (changes are recorded under it) and role."""
    from rf.cli.output import out, print_json

    with backend() as b:
        me = b.whoami()
    if json_out:
        print_json(me)
        return
    out.print(f"{me.name} ({me.role}{', workspace owner' if me.owner else ''})")
