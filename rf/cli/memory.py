"""``rf memory``: agent memory of one environment (``staging:`` / ``production:`` namespaces)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from rf.cli.app import EnvOption, JsonOption, backend, check_env
from rf.errors import UsageError

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Agent memory, per environment (production is read-only).")

PrefixOption = Annotated[str, typer.Option("--prefix", "-p", help="Only keys starting with this.")]


@app.command("list")
def list_memory(
    env: EnvOption = "staging",
    prefix: PrefixOption = "",
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many keys.")] = 1000,
    json_out: JsonOption = False,
) -> None:
    """Keys of one environment's memory, with a preview of each value."""
    import json

    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import env_label, fit_table, out, print_json, when

    check_env(env)
    with backend() as b:
        items = b.list_memory(env, prefix, limit)
    if json_out:
        print_json(items)
        return
    where = f" under {prefix!r}" if prefix else ""
    if not items:
        out.print(f"no memory in {env_label(env)}{escape(where)}")
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left",
                  title=f"memory · {env_label(env)} [dim](namespace {env}:)[/dim]{escape(where)}")
    table.add_column("key", no_wrap=True)
    table.add_column("value", overflow="ellipsis", max_width=60, no_wrap=True)
    table.add_column("size", justify="right", style="dim")
    table.add_column("updated (UTC)", style="dim")
    table.add_column("by agent", style="dim")
    for item in items:
        value = json.dumps(item.value, ensure_ascii=False)
        table.add_row(escape(item.key), escape(value), f"{item.size} B", when(item.updated_at), item.agent or "—")
    out.print(fit_table(table))


@app.command("get")
def get(
    key: Annotated[str, typer.Argument(help="Memory key (without the env: namespace).")],
    env: EnvOption = "staging",
    json_out: JsonOption = False,
) -> None:
    """Print one key's value as JSON (details on stderr)."""
    import json

    from rf.cli.output import env_label, err, print_json, when

    check_env(env)
    with backend() as b:
        item = b.get_memory(key, env)
    if json_out:
        print_json(item)
        return
    sys.stdout.write(json.dumps(item.value, indent=2, ensure_ascii=False) + "\n")
    err.print(f"[dim]{env}:{item.key} · {env_label(env)} · {item.size} B · updated {when(item.updated_at)} UTC"
              f" by {item.agent or '—'} ({item.execution_id or '—'})[/dim]")


@app.command("delete")
def delete(
    key: Annotated[str, typer.Argument(help="Memory key to delete.")],
    env: EnvOption = "staging",
) -> None:
    """Delete one key of [bold #f59e0b]staging[/] memory (production memory is read-only)."""
    from rf.cli.output import success

    check_env(env)
    with backend() as b:
        change = b.delete_memory(key, env)
    success(f"deleted {env}:{change.keys[0] if change.keys else key}")


@app.command("clear")
def clear(
    env: EnvOption = "staging",
    prefix: PrefixOption = "",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete every key of [bold #f59e0b]staging[/] memory (under --prefix); production is read-only."""
    from rf.cli.output import success

    check_env(env)
    if env == "staging" and not yes:
        if not sys.stdin.isatty():
            raise UsageError("clearing memory needs confirmation", "re-run with --yes")
        what = f"every staging memory key under {prefix!r}" if prefix else "all staging memory"
        if not typer.confirm(f"Delete {what}?", default=False, err=True):
            raise typer.Exit(1)
    with backend() as b:
        change = b.clear_memory(env, prefix)
    success(f"deleted {change.deleted} key{'s' if change.deleted != 1 else ''} from {env} memory")
