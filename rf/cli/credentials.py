"""``rf credentials``: secrets shared by both environments.

A credential's value lives in the OS keyring (or rf's 0600 file where there
is none); the workspace database only knows its name. Because staging and
production share credentials, ``set`` and ``delete`` first list the
production connectors and providers that use it and ask before changing
anything: the change reaches production at once.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from rf.cli.app import JsonOption, backend, confirm
from rf.errors import UsageError

if TYPE_CHECKING:
    from rf.client import Backend

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", help="Credentials (shared by both environments).")

NameArg = Annotated[str, typer.Argument(help="Credential name (lowercase letters, digits, '-' and '_').")]
YesOption = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _confirm_production(b: Backend, name: str, action: str, yes: bool) -> None:
    """List what in production uses ``name``; ask (or require --yes) when anything does."""
    from rich.markup import escape

    from rf.cli.output import err

    usage = b.credential_usage(name)
    if not usage.production:
        return
    err.print(f"[production]production[/production] uses credential [bold]{escape(name)}[/bold] — "
              f"{action} affects it immediately:")
    for label in usage.production:
        err.print(f"  • {escape(label)}")
    if yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"credential {name!r} is used in production ({', '.join(usage.production)}); "
                         f"{action} needs confirmation", "re-run with --yes")
    confirm(f"{action[0].upper() + action[1:]} anyway?", yes)


def _read_value(name: str, from_stdin: bool) -> str:
    if from_stdin:
        value = sys.stdin.read()
        # One trailing newline is how `echo` and most secret managers end a value.
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
        if not value:
            raise UsageError("stdin was empty", f"pipe the value in: printf %s \"$TOKEN\" | rf credentials set {name} --from-stdin")
        return value
    if not sys.stdin.isatty():
        raise UsageError("no value: stdin is not a terminal, so rf cannot prompt for it",
                         f"pipe it in: rf credentials set {name} --from-stdin")
    value = typer.prompt(f"Value of {name}", hide_input=True, confirmation_prompt=True, err=True)
    if not isinstance(value, str) or not value:
        raise UsageError("the value is empty")
    return value


@app.command("set")
def set_credential(
    name: NameArg,
    from_stdin: Annotated[bool, typer.Option("--from-stdin", help="Read the value from stdin instead of a hidden prompt.")] = False,
    description: Annotated[str | None, typer.Option("--description", "-d", help="What it is for (kept when omitted on rotation).")] = None,
    yes: YesOption = False,
    json_out: JsonOption = False,
) -> None:
    """Create or rotate a credential. The value is read from a hidden prompt (or --from-stdin).

    Credentials are shared: when production connectors or providers use this
    one, they switch to the new value at once, so rf asks first.
    """
    from rf.cli.output import info, print_json, success

    with backend() as b:
        _confirm_production(b, name, "changing it", yes)
        value = _read_value(name, from_stdin)
        cred = b.set_credential(name, value, description)
    if json_out:
        print_json(cred)
        return
    success(f"credential [bold]{name}[/bold] saved — {cred.storage}")
    if cred.used_by:
        info(f"  used by: {', '.join(cred.used_by)}")


@app.command("list")
def list_credentials(json_out: JsonOption = False) -> None:
    """Credentials, where their values live, and who uses them (never the values)."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json, when

    with backend() as b:
        creds = b.list_credentials()
    if json_out:
        print_json(creds)
        return
    if not creds:
        out.print("no credentials yet — add one: rf credentials set NAME")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("credential")
    table.add_column("storage")
    table.add_column("used by")
    table.add_column("rotated (UTC)", style="dim")
    table.add_column("description", overflow="ellipsis", max_width=40)
    for c in creds:
        table.add_row(c.name, escape(c.storage), escape(", ".join(c.used_by) or "—"), when(c.rotated_at),
                      escape(c.description))
    out.print(fit_table(table, flex=("used by", "storage"), optional=("rotated (UTC)", "description")))


@app.command("delete")
def delete_credential(name: NameArg, yes: YesOption = False, json_out: JsonOption = False) -> None:
    """Delete a credential and its stored value (its users fail until it is set again)."""
    from rf.cli.output import print_json, success, warn

    with backend() as b:
        b.get_credential(name)
        _confirm_production(b, name, "deleting it", yes)
        cred = b.delete_credential(name)
    if json_out:
        print_json(cred)
        return
    success(f"deleted credential [bold]{name}[/bold]")
    if cred.used_by:
        warn(f"still referenced by: {', '.join(cred.used_by)} — their calls fail until you run "
             f"rf credentials set {name}")


@app.command("usage")
def usage(name: NameArg, json_out: JsonOption = False) -> None:
    """Connector instances (per environment), LLM providers and data sources that use a credential."""
    from rf.cli.output import out, print_json
    from rf.errors import NotFound

    with backend() as b:
        result = b.credential_usage(name)
    if json_out:
        print_json(result)
        return
    if not result.exists and not result.users:
        raise NotFound(f"unknown credential {name!r}", f"set it: rf credentials set {name}")
    if not result.users:
        out.print(f"{name}: not used by any connector, provider or data source")
        return
    for u in result.users:
        where = f" [{u.env}]{u.env}[/{u.env}]" if u.env else " [dim](shared)[/dim]"
        if u.prepared:
            where += " [dim](settings prepared in staging, not published yet)[/dim]"
        out.print(f"{u.kind:<11} {u.name}{where}")
    if not result.exists:
        out.print(f"[yellow]credential {name} is not set: these calls fail until rf credentials set {name}[/yellow]")
