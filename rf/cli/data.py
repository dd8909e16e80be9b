"""``rf data``: data sources queried with read-only SQL, shared by both environments.

``rf data add sales --file sales.csv`` records where the data lives (it is
not copied); in SQL the source is the table named after it:
``rf data query sales "SELECT region, sum(amount) FROM sales GROUP BY 1"``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from rf.cli.app import JsonOption, backend, confirm, parse_json_arg
from rf.errors import UsageError

if TYPE_CHECKING:
    from rf.models import DataQueryResult

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Data sources: files, DuckDB and PostgreSQL databases, queried with SQL (shared).")

NameArg = Annotated[str, typer.Argument(help="Data source name (the table name in SQL).")]


@app.command("add")
def add(
    name: NameArg,
    file: Annotated[Path | None, typer.Option("--file", help="A .csv / .tsv / .parquet / .json / .jsonl file.")] = None,
    duckdb_file: Annotated[Path | None, typer.Option("--duckdb", help="A DuckDB database file (opened read-only).")] = None,
    postgres: Annotated[str | None, typer.Option("--postgres", help="postgresql://USER@HOST:PORT/DB (no password).")] = None,
    credential: Annotated[str | None, typer.Option("--credential", help="Credential holding the PostgreSQL password.")] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="What it holds.")] = "",
    json_out: JsonOption = False,
) -> None:
    """Register a data source (checked first: nothing is stored if it cannot be read)."""
    from rich.markup import escape

    from rf.cli.output import info, print_json, success

    given = [(k, v) for k, v in (("file", file), ("duckdb", duckdb_file), ("postgres", postgres)) if v is not None]
    if len(given) != 1:
        raise UsageError("choose exactly one of --file PATH, --duckdb FILE, --postgres DSN")
    kind, value = given[0]
    location = str(Path(value).expanduser().resolve()) if isinstance(value, Path) else str(value)
    with backend() as b:
        change = b.add_data_source(name, kind, location, credential, description)
    if json_out:
        print_json(change)
        return
    s = change.source
    success(f"added data source [bold]{escape(s.name)}[/bold] ({s.kind}: {escape(s.location)})")
    if s.columns:
        label = "tables" if s.kind == "duckdb" else "columns"
        info(f"  {label}: {escape(', '.join(s.columns[:20]))}" + (" …" if len(s.columns) > 20 else ""))
    for w in change.warnings:
        info(f"[dim]  {escape(w)}[/dim]")
    example = (f"SELECT * FROM {s.name} LIMIT 10" if s.kind not in ("duckdb", "postgres") else "SHOW TABLES"
               if s.kind == "duckdb" else
               "SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema NOT IN "
               "('pg_catalog', 'information_schema')")
    info(f"[dim]  try: rf data query {s.name} \"{example}\"[/dim]")


@app.command("list")
def list_sources(json_out: JsonOption = False) -> None:
    """Data sources (shared by both environments)."""
    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import fit_table, out, print_json

    with backend() as b:
        sources = b.list_data_sources()
    if json_out:
        print_json(sources)
        return
    if not sources:
        out.print("no data sources yet — add one: rf data add NAME --file PATH")
        return
    table = Table(box=None, pad_edge=False, header_style="bold", title="data sources · shared by both environments",
                  title_justify="left")
    for col in ("name", "kind", "location", "credential", "used by"):
        table.add_column(col)
    for s in sources:
        used = ", ".join(sorted({f"{u.agent} ({u.env})" for u in s.used_by})) or "—"
        table.add_row(s.name, s.kind, escape(s.location), s.credential or "—", escape(used))
    out.print(fit_table(table))


@app.command("show")
def show(name: NameArg, json_out: JsonOption = False) -> None:
    """One data source, with its columns (files) or tables (DuckDB files)."""
    from rich.markup import escape

    from rf.cli.output import out, print_json, when

    with backend() as b:
        s = b.get_data_source(name)
    if json_out:
        print_json(s)
        return
    out.print(f"[bold]{escape(s.name)}[/bold]  (shared by staging and production)")
    rows = [("kind", s.kind), ("location", s.location), ("added", when(s.created_at) + " UTC")]
    if s.credential:
        rows.append(("credential", s.credential))
    if s.description:
        rows.insert(0, ("description", s.description))
    if s.columns:
        rows.append(("tables" if s.kind == "duckdb" else "columns", ", ".join(s.columns)))
    if s.used_by:
        rows.append(("used by", ", ".join(f"{u.agent} ({u.env})" for u in s.used_by)))
    for key, value in rows:
        out.print(f"  [dim]{key:<11}[/dim] {escape(value)}")


@app.command("remove")
def remove(name: NameArg, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Forget a data source (the data itself is not touched)."""
    from rich.markup import escape

    from rf.cli.output import err, success, warn

    with backend() as b:
        s = b.get_data_source(name)
        prod = sorted({u.agent for u in s.used_by if u.env == "production"})
        if prod:
            err.print(f"[production]production[/production] agents query [bold]{escape(name)}[/bold] "
                      f"({escape(', '.join(prod))}) — removing it breaks them immediately (data sources are shared)")
            if not yes and not sys.stdin.isatty():
                raise UsageError(f"data source {name!r} is used in production; removing it needs confirmation",
                                 "re-run with --yes")
            confirm("Remove it anyway?", yes)
        change = b.remove_data_source(name)
    success(f"removed data source {name}")
    for w in change.warnings:
        warn(w)


@app.command("query")
def query(
    name: NameArg,
    sql: Annotated[str, typer.Argument(help='One read-only statement, e.g. "SELECT count(*) FROM sales".')],
    params: Annotated[str | None, typer.Option("--params", help="JSON list (for ?; PostgreSQL: $1, $2, ...) or object (for $name, DuckDB).")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many rows.")] = 100,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds before the query is cancelled.")] = 30.0,
    json_out: JsonOption = False,
) -> None:
    """Run read-only SQL on a data source (writes are refused)."""
    from rf.cli.output import print_json

    values = parse_json_arg(params, "--params") if params is not None else None
    with backend() as b:
        result = b.query_data(name, sql, values, limit, timeout)
    if json_out:
        print_json(result)
        return
    _print_table(result)


def _print_table(result: DataQueryResult) -> None:
    import json

    from rich.markup import escape
    from rich.table import Table

    from rf.cli.output import err, fit_table, out

    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in result.columns:
        table.add_column(escape(c))
    for row in result.rows:
        table.add_row(*[escape("NULL" if v is None else v if isinstance(v, str) else json.dumps(v))
                        for v in row.values()])
    out.print(fit_table(table, flex=tuple(str(column.header) for column in table.columns)))  # long values give way
    more = f" (truncated at --limit {result.row_count}; there are more)" if result.truncated else ""
    err.print(f"[dim]{result.row_count} row{'s' if result.row_count != 1 else ''} in {result.took_ms:.0f} ms{more}[/dim]")
