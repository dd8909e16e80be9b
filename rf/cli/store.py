"""``rf store info|copy``: the workspace's store as a whole (rf.store.ops, through rf.compose)."""

from __future__ import annotations

from typing import Annotated

import typer

from rf.cli.app import JsonOption, workspace

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="The store as a whole: what it holds; copy a DuckDB store into PostgreSQL.")


@app.command("info")
def info(json_out: JsonOption = False) -> None:
    """The workspace's store: its kind, schema version, size and the rows of each table (opened in this
    process: with DuckDB, stop a running server first)."""
    from rich.markup import escape
    from rich.table import Table

    from rf import compose
    from rf.cli.gc import size
    from rf.cli.output import out, print_json

    result = compose.store_info(workspace())
    if json_out:
        print_json(result)
        return
    out.print(f"[bold]store[/bold]     {escape(result.store)}")
    out.print(f"[bold]schema[/bold]    v{result.schema_version}")
    out.print(f"[bold]size[/bold]      {size(result.bytes)}")
    if result.max_connections is not None:
        pool = result.pool
        out.print(f"[bold]pool[/bold]      at most {result.max_connections} connections per rf process"
                  f" ({escape('[store]')} max_connections); this one: {pool.get('open', 0)} open")
    if result.kind == "postgresql":
        n = len(result.replicas)
        out.print(f"[bold]replicas[/bold]  {n} rf server{'s' if n != 1 else ''} live on this store")
        for r in result.replicas:
            out.print(f"          {escape(r.url)}  [dim]host[/dim] {escape(r.host)}  [dim]pid[/dim] {r.pid}"
                      f"  [dim]heartbeat {r.heartbeat_age_s:.1f} s ago[/dim]")
    table = Table(box=None, pad_edge=False, header_style="bold")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for t in result.tables:
        table.add_row(t.name, f"{t.rows:,}", style="" if t.rows else "dim")
    out.print(table)
    out.print(f"[dim]{result.rows:,} rows in {len(result.tables)} tables[/dim]")


@app.command("copy")
def copy(
    to: Annotated[str, typer.Option("--to", help="The empty PostgreSQL database: postgresql://USER@HOST:PORT/DB.")],
    password_env: Annotated[str | None, typer.Option(
        "--password-env", help="The environment variable holding its password (default: [store] password_env,"
                               " else PGPASSWORD or ~/.pgpass).")] = None,
    json_out: JsonOption = False,
) -> None:
    r"""Copy this workspace's DuckDB store (.rf/rf.duckdb) into an empty PostgreSQL database.

    Every table, in schema order, in one transaction (all or nothing); the DuckDB file is left as it was. A database that holds anything is refused. Then switch the workspace with rf.toml \[store] url.
    """
    import re

    from rich.markup import escape

    from rf import compose
    from rf.cli.output import info as say
    from rf.cli.output import out, print_json, success
    from rf.errors import UsageError

    if password_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", password_env):
        raise UsageError("--password-env must be the name of an environment variable", "e.g. --password-env PGPW")
    ws = workspace()
    chosen_env = password_env or ws.store_password_env

    def progress(table: str, rows: int) -> None:
        if rows and not json_out:
            say(f"  [dim]{escape(table)}[/dim] {rows:,}")

    result = compose.copy_store(ws, to, password_env=chosen_env, progress=progress)
    if json_out:
        print_json(result)
        return
    success(f"copied {result.rows:,} rows in {len(result.tables)} tables to {escape(result.target)}"
            f" in {result.duration_ms / 1000:.2f} s (vectors: {result.vectors})")
    if result.skipped:
        say(f"[yellow]not copied[/yellow] (no part of rf's schema): {escape(', '.join(result.skipped))}")
    out.print("next: point the workspace at it in rf.toml, then restart rf serve:")
    out.print(escape("  [store]"))
    out.print(f'  url = "{escape(result.target)}"')
    if chosen_env:
        out.print(f'  password_env = "{chosen_env}"')
    out.print(f"[dim]the DuckDB file {escape(result.source)} was not changed: keep it as a backup[/dim]")
