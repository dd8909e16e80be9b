"""Data sources: files, DuckDB databases and PostgreSQL, queried read-only with SQL. Shared by both environments.

``rf data add sales --file sales.csv`` records *where* the data is (nothing
is copied); ``SELECT count(*) FROM sales`` then queries it — the source is
the table named after it. Sources are shared: staging and production agents
query the same data, so adding or removing one affects production at once
(results carry warnings; the CLI asks before removing a source production
agents used).

Every query runs in its own throwaway, locked-down DuckDB connection (never
the store's) or, for PostgreSQL, in a READ ONLY transaction — see
:mod:`rf.store.datasources` for the engine and why it is safe. Bad input
(unknown source, a file that does not exist or does not parse, SQL that
writes, a DSN with a password in it) is refused with a clear error before
anything is stored.

Agent code reaches it through ``ctx.data(name).query(sql, params, limit)``
→ host method ``data.query``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rf.config import check_name
from rf.errors import Conflict, NotFound, UsageError
from rf.ids import utcnow
from rf.models import DataQueryResult, DataSource, DataSourceChange, ResourceUse
from rf.services.base import ServiceContext
from rf.services.credentials import CredentialsService
from rf.services.host import HostCall, host_method
from rf.services.resource_use import ResourceUses

_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
               ".json": "json", ".jsonl": "json", ".ndjson": "json"}
MAX_LIMIT = 100_000
MAX_TIMEOUT_S = 600.0
DEFAULT_TIMEOUT_S = 30.0


def _check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not (1 <= limit <= MAX_LIMIT):
        raise UsageError(f"limit must be a whole number between 1 and {MAX_LIMIT}")
    return limit


def _check_timeout(timeout_s: Any) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or not (0 < timeout_s <= MAX_TIMEOUT_S):
        raise UsageError(f"timeout must be a number of seconds between 0 and {MAX_TIMEOUT_S:g}")
    return float(timeout_s)


class DataSourcesService:
    """Data sources (files, DuckDB files, PostgreSQL) shared by both environments; ``ctx.data``."""

    def __init__(self, ctx: ServiceContext, credentials: CredentialsService, uses: ResourceUses) -> None:
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.credentials = credentials
        self.uses = uses

    def _source_row(self, name: str) -> dict[str, Any]:
        if not isinstance(name, str):
            raise UsageError("a data source name must be a string")
        rows = self.store.data_source_rows(name)
        if not rows:
            known = [r["name"] for r in self.store.data_source_rows()]
            hint = f"known data sources: {', '.join(known)}" if known else f"add it: rf data add {name} --file PATH"
            raise NotFound(f"unknown data source {name!r}", hint)
        return rows[0]

    def _source_model(self, row: dict[str, Any]) -> DataSource:
        return DataSource(**row, used_by=[ResourceUse(**u) for u in self.store.resource_uses("data", row["name"])])

    def list_data_sources(self) -> list[DataSource]:
        """Every data source (shared by both environments)."""
        return [self._source_model(r) for r in self.store.data_source_rows()]

    def get_data_source(self, name: str) -> DataSource:
        """One data source with its columns (files) or tables (DuckDB files), read now."""
        from rf.store.datasources import probe_file

        source = self._source_model(self._source_row(name))
        if source.kind != "postgres":
            try:
                source.columns = probe_file(source.name, source.kind, source.location)
            except Exception:  # noqa: BLE001 - show what is stored even when the file went away
                source.columns = []
        return source

    def add_data_source(self, name: str, kind: str, location: str, credential: str | None = None,
                        description: str = "") -> DataSourceChange:
        """Register a source after checking it can be read (nothing is stored otherwise).

        ``kind``: ``file`` (csv / parquet / json, from the extension), ``csv``,
        ``parquet``, ``json``, ``duckdb`` (a DuckDB database file, attached
        read-only) or ``postgres`` (``location`` is a DSN without password,
        ``credential`` names the credential holding the password).
        """
        from rf.store.datasources import check_postgres_source, parse_postgres_dsn, probe_file

        check_name("data source", name)
        if not isinstance(location, str) or not location.strip():
            raise UsageError("give the data source's location: --file PATH, --duckdb FILE or --postgres DSN")
        if not isinstance(description, str):
            raise UsageError("description must be text")
        if self.store.data_source_rows(name):
            raise Conflict(f"data source {name!r} already exists", f"remove it first: rf data remove {name}")
        columns: list[str] = []
        if kind == "postgres":
            parse_postgres_dsn(location)
            if not credential:
                raise UsageError("a PostgreSQL source needs --credential NAME (the credential holds the password)",
                                 "store it first: rf credentials set NAME")
            check_name("credential", credential)
            password = self._data_password(credential, name)
            check_postgres_source(name, location, password, timeout_s=15)
            location = location.strip()
        else:
            if credential:
                raise UsageError("--credential applies to PostgreSQL sources only")
            path = Path(location).expanduser()
            if not path.is_absolute() and self.workspace is not None:
                path = self.workspace.root / path
            path = path.resolve()
            if kind == "file":
                found = _EXTENSIONS.get(path.suffix.lower())
                if found is None:
                    raise UsageError(f"unsupported data file type {path.suffix or '(none)'!r}: {path.name}",
                                     "use .csv, .tsv, .parquet, .json or .jsonl — or --duckdb for a DuckDB file")
                kind = found
            if kind not in ("csv", "parquet", "json", "duckdb"):
                raise UsageError(f"unknown data source kind {kind!r}", "use --file, --duckdb or --postgres")
            if not path.is_file():
                raise UsageError(f"{path} does not exist or is not a file")
            if self.store.path is not None and path == Path(self.store.path).resolve():
                raise UsageError("that is rf's own database", "export the data to a file and add that instead")
            location = str(path)
            columns = probe_file(name, kind, location)
        self.store.insert_data_source(name=name, kind=kind, location=location, credential=credential,
                                      description=description.strip(), now=utcnow())
        source = self._source_model(self._source_row(name))
        source.columns = columns
        return DataSourceChange("added", source, [
            f"data sources are shared: staging and production agents can query {name!r} right away"])

    def remove_data_source(self, name: str) -> DataSourceChange:
        """Forget a data source (the data itself is not touched). Production agents using it start failing."""
        source = self._source_model(self._source_row(name))
        prod = sorted({u.agent for u in source.used_by if u.env == "production"})
        warnings = [f"production agents {', '.join(prod)} queried it; their ctx.data({name!r}) calls now fail"] \
            if prod else []
        self.store.delete_data_source(name)
        self.store.forget_resource_uses("data", name)
        return DataSourceChange("removed", source, warnings)

    def _data_password(self, credential: str, source: str) -> str:
        value = self.credentials.credential_secret(credential)
        if not value:
            raise NotFound(f"credential {credential!r} (used by data source {source!r}) has no value",
                           f"set it: rf credentials set {credential}")
        return str(value)

    def query_data(self, name: str, sql: str, params: Any = None, limit: int = 1000,
                   timeout_s: float = DEFAULT_TIMEOUT_S) -> DataQueryResult:
        """Run one read-only SQL statement on a source; at most ``limit`` rows, within ``timeout_s``.

        ``params``: files and DuckDB files take a list for ``?`` placeholders or a dict
        for ``$name`` ones (DuckDB's styles); PostgreSQL sources take a list for
        PostgreSQL's own ``$1, $2, ...`` and get the SQL untouched (``?`` is
        PostgreSQL's jsonb operator there). On PostgreSQL ``timeout_s`` is the
        statement timeout of the READ ONLY transaction the query runs in.
        """
        return self._query(name, sql, params, limit, timeout_s, None)

    def _query(self, name: str, sql: str, params: Any, limit: int, timeout_s: float,
               call: HostCall | None) -> DataQueryResult:
        from rf.store.datasources import run_duckdb_query, run_postgres_query

        limit = _check_limit(limit)
        timeout_s = _check_timeout(timeout_s)
        # From an agent, the query gets at most the time its execution has left.
        timeout_s, cut_short = call.time_left(timeout_s) if call is not None else (timeout_s, False)
        out_of_time = f"raise timeout_s in agents/{call.agent}/agent.toml, or narrow the query" if (
            cut_short and call is not None) else None
        row = self._source_row(name)
        if row["kind"] == "postgres":
            password = self._data_password(row["credential"], name) if row["credential"] else None
            if call is not None and password:
                call.secret(password)
            out = run_postgres_query(name, row["location"], password, sql, params=params, limit=limit,
                                     timeout_s=timeout_s, out_of_time_hint=out_of_time)
        else:
            out = run_duckdb_query(name, row["kind"], row["location"], sql, params=params, limit=limit,
                                   timeout_s=timeout_s, out_of_time_hint=out_of_time)
        return DataQueryResult(source=name, columns=out.columns, types=out.types, rows=out.rows,
                               row_count=len(out.rows), truncated=out.truncated, took_ms=out.elapsed_ms)

    @host_method("data.query")
    def data_query_host(self, call: HostCall, name: str, sql: str, params: Any = None, limit: int = 1000,
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
        """``ctx.data(name).query``: the same source whatever the environment (sources are shared)."""
        call.annotate(source=name, sql=sql[:2000] if isinstance(sql, str) else sql, limit=limit)
        result = self._query(name, sql, params, limit, timeout_s, call)
        call.annotate(rows=result.row_count, truncated=result.truncated, columns=result.columns)
        self.uses.note("data", name, call)
        return {"columns": result.columns, "types": result.types, "rows": result.rows,
                "truncated": result.truncated}
