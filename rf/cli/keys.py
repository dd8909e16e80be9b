"""``rf keys``: endpoint keys, per environment.

On a loopback server the endpoints answer without a key unless ``[server]
require_keys = true``; a server bound to another address always requires
one. Session reads (``GET /{env}/agents/NAME/sessions/ID``) always need a key
of that environment (or the management token). A key is shown once, when it
is created; rf keeps only its hash.
"""

from __future__ import annotations

from typing import Annotated

import typer

from rf.cli.app import JsonOption, backend

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Endpoint keys: who may call an environment's agents.")

KeyEnvOption = Annotated[str, typer.Option("--env", "-e", help="staging or production.")]


@app.command("create")
def create(
    env: KeyEnvOption,
    name: Annotated[str, typer.Option("--name", "-n", help="What the key is for, e.g. ci or website.")] = "default",
    json_out: JsonOption = False,
) -> None:
    """Create a key for one environment. It is printed once: store it where its caller reads it."""
    from rf.cli.output import err, out, print_json
    from rf.config import git_author

    with backend() as b:
        created = b.create_key(env, name, git_author())
    if json_out:
        print_json(created)
        return
    out.print(created.secret)
    err.print(f"[{env}]{env}[/{env}] key [bold]{created.key.name}[/bold] ({created.key.id}) — shown once, "
              "rf keeps only its hash")
    err.print(f"[dim]use it: curl -H 'authorization: Bearer KEY' -H 'content-type: application/json' "
              f"URL/{env}/agents/NAME -d '{{\"input\": ...}}'[/dim]")


@app.command("list")
def list_keys(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Only this environment.")] = None,
    all_keys: Annotated[bool, typer.Option("--all", help="Include revoked keys.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Endpoint keys (never the keys themselves: their first characters, to recognise them)."""
    from rich.table import Table

    from rf.cli.output import env_label, fit_table, out, print_json, when

    with backend() as b:
        keys = b.list_keys(env, all_keys)
    if json_out:
        print_json(keys)
        return
    if not keys:
        out.print("no endpoint keys — create one: rf keys create --env production --name ci")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("env", "name", "key", "id", "created (UTC)", "by", "revoked (UTC)"):
        table.add_column(column)
    for k in keys:
        table.add_row(env_label(k.env), k.name, f"{k.prefix}…", k.id, when(k.created_at), k.created_by,
                      when(k.revoked_at) if k.revoked_at else "")
    out.print(fit_table(table, flex=("by",), optional=("id", "by", "created (UTC)")))


@app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="The key's name or id.")],
    env: Annotated[str | None, typer.Option("--env", "-e", help="Needed when both environments have the name.")] = None,
    json_out: JsonOption = False,
) -> None:
    """Revoke a key: its callers are refused from the next request on."""
    from rf.cli.output import print_json, success

    with backend() as b:
        revoked = b.revoke_key(key, env)
    if json_out:
        print_json(revoked)
        return
    success(f"revoked [{revoked.env}]{revoked.env}[/{revoked.env}] key [bold]{revoked.name}[/bold] ({revoked.id})")
