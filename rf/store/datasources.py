"""Data sources: their rows in the store, and the read-only query engine.

A data source is shared by both environments (no environment column). Its
row says where the data lives; nothing is copied into rf's own database.

**Queries never touch the store's connection.** Each query opens a fresh
in-memory DuckDB connection and exposes the one source in it:

- a CSV / Parquet / JSON file becomes a view named after the source
  (``read_csv_auto`` / ``read_parquet`` / ``read_json_auto``), so
  ``SELECT count(*) FROM sales`` works for ``rf data add sales --file ...``;
- a DuckDB file is attached ``READ_ONLY`` as a catalog named after the
  source and made the default (``SELECT * FROM orders`` and
  ``SELECT * FROM wh.orders`` both work);

then the connection is locked down: ``allowed_paths`` = that one file,
``enable_external_access = false`` (no other file, no network, no ATTACH,
no COPY TO) and ``lock_configuration = true`` (the query cannot undo it).

**Read-only, checked twice.** The SQL is parsed with DuckDB's own parser
(``extract_statements``): exactly one statement of type SELECT (which covers
``WITH``, ``VALUES``, ``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``FROM t``) is
accepted; anything else is refused before it runs. And the engine itself
cannot write anywhere that outlives the throwaway connection.

**Bounded.** A timer interrupts the connection after ``timeout_s``; the
statement is wrapped as ``SELECT * FROM (...) LIMIT limit + 1`` so DuckDB can
stop early, and the extra row only tells that the result was truncated.

**PostgreSQL** sources run on the server itself through ``pg8000`` (pure
Python, BSD; DuckDB's postgres extension cannot be downloaded here): one
query (SELECT / WITH / VALUES / TABLE) inside a ``READ ONLY`` transaction with
``SET LOCAL statement_timeout`` = the query's timeout, always rolled back;
the password comes from the named credential at query time and is masked
in any error PostgreSQL echoes it in. Params are PostgreSQL's own ``$1,
$2, ...`` (a list), sent apart from the SQL, which reaches the server
untouched — so the jsonb ``?`` / ``?|`` / ``?&`` operators and ``%`` work.
READ ONLY does not stop every side effect (``pg_terminate_backend``,
``pg_cancel_backend``, advisory locks, ``dblink``, reading server files
for privileged roles): the role the DSN names is the real boundary — give
it SELECT only.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import duckdb

from rf.errors import RfError, UsageError
from rf.ids import iso

if TYPE_CHECKING:
    import contextlib

FILE_KINDS = {"csv": "read_csv_auto", "parquet": "read_parquet", "json": "read_json_auto"}
KINDS = (*FILE_KINDS, "duckdb", "postgres")
MEMORY_LIMIT = "2GB"

_COLUMNS = "name, kind, location, credential, description, created_at, updated_at"


class DataSourcesMixin:
    """Mixed into :class:`rf.store.Store`."""

    path: Path | None

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    if TYPE_CHECKING:

        def transaction(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]: ...

    @staticmethod
    def _source_row(r: tuple[Any, ...]) -> dict[str, Any]:
        return {"name": r[0], "kind": r[1], "location": r[2], "credential": r[3], "description": r[4],
                "created_at": iso(r[5]), "updated_at": iso(r[6])}

    def data_source_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = f"SELECT {_COLUMNS} FROM data_sources"
        params: list[Any] = []
        if name is not None:
            sql += " WHERE name = ?"
            params.append(name)
        return [self._source_row(r) for r in self.cursor().execute(sql + " ORDER BY name", params).fetchall()]

    def insert_data_source(self, *, name: str, kind: str, location: str, credential: str | None, description: str,
                           now: dt.datetime) -> None:
        with self.transaction() as cur:
            cur.execute(f"INSERT INTO data_sources ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [name, kind, location, credential, description, now, now])

    def delete_data_source(self, name: str) -> None:
        with self.transaction() as cur:
            cur.execute("DELETE FROM data_sources WHERE name = ?", [name])

    def data_sources_using_credential(self, credential: str) -> list[str]:
        return [r[0] for r in self.cursor().execute(
            "SELECT name FROM data_sources WHERE credential = ? ORDER BY name", [credential]).fetchall()]

    def note_resource_use(self, kind: str, name: str, env: str, agent: str, now: dt.datetime) -> None:
        """Remember that ``agent`` in ``env`` used a KB or data source (for warnings on removal)."""
        with self.transaction() as cur:
            cur.execute("INSERT OR REPLACE INTO resource_uses (kind, name, env, agent, last_used_at) "
                        "VALUES (?, ?, ?, ?, ?)", [kind, name, env, agent, now])

    def resource_uses(self, kind: str, name: str) -> list[dict[str, Any]]:
        rows = self.cursor().execute(
            "SELECT env, agent, last_used_at FROM resource_uses WHERE kind = ? AND name = ? ORDER BY env, agent",
            [kind, name]).fetchall()
        return [{"env": r[0], "agent": r[1], "last_used_at": iso(r[2])} for r in rows]

    def forget_resource_uses(self, kind: str, name: str) -> None:
        with self.transaction() as cur:
            cur.execute("DELETE FROM resource_uses WHERE kind = ? AND name = ?", [kind, name])


# ---------------------------------------------------------------- the query engine

@dataclass
class QueryOutput:
    columns: list[str]
    types: list[str]
    rows: list[dict[str, Any]]
    truncated: bool
    elapsed_ms: float


def check_read_only(sql: str) -> str:
    """The one SELECT-type statement in ``sql`` (its text, without a trailing ``;``), or a UsageError."""
    if not isinstance(sql, str) or not sql.strip():
        raise UsageError("the query is empty", 'e.g. "SELECT * FROM sales LIMIT 10"')
    con = duckdb.connect(":memory:")
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"SQL syntax error: {_first_line(exc)}") from None
    finally:
        con.close()
    if len(statements) != 1:
        raise UsageError(f"send exactly one SQL statement (got {len(statements)})",
                         "run statements one at a time")
    stmt = statements[0]
    kind = stmt.type.name
    if kind != "SELECT":
        raise UsageError(f"data sources are read-only: {kind} statements are refused",
                         "use a query: SELECT / WITH / VALUES / DESCRIBE / SHOW / SUMMARIZE")
    return str(stmt.query).strip().rstrip(";").strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _check_params(params: Any) -> list[Any] | dict[str, Any] | None:
    if params is None:
        return None
    if isinstance(params, list | tuple):
        values = list(params)
    elif isinstance(params, dict):
        if not all(isinstance(k, str) and k for k in params):
            raise UsageError("query params: a dict's keys must be parameter names")
        values = list(params.values())
    else:
        raise UsageError("query params must be a list (for ? placeholders) or a dict (for $name placeholders)")
    for v in values:
        if v is not None and not isinstance(v, str | int | float | bool):
            raise UsageError(f"query params must be strings, numbers, booleans or null, not {type(v).__name__}")
    return list(params) if isinstance(params, list | tuple) else dict(params)


def jsonable(value: Any) -> Any:
    """A result cell as JSON: dates as ISO text, decimals as numbers, bytes as base64, NaN as null."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            return None
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return str(value)


def open_source(name: str, kind: str, location: str) -> duckdb.DuckDBPyConnection:
    """A fresh in-memory connection exposing one file source, locked down (see the module docstring)."""
    path = Path(location)
    if not path.exists():
        raise RfError(f"data source {name!r}: {location} does not exist (any more)",
                      f"put the file back, or re-add the source: rf data remove {name}; rf data add {name} ...")
    con = duckdb.connect(":memory:", config={"memory_limit": MEMORY_LIMIT})
    try:
        if kind == "duckdb":
            con.execute(f"ATTACH {_literal(str(path))} AS {_ident(name)} (READ_ONLY)")
            con.execute(f"USE {_ident(name)}")
            allowed = [str(path)]
        else:
            reader = FILE_KINDS[kind]
            con.execute(f"CREATE VIEW {_ident(name)} AS SELECT * FROM {reader}({_literal(str(path))})")
            allowed = [str(path)]
        con.execute("SET allowed_paths = " + "[" + ", ".join(_literal(p) for p in allowed) + "]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
    except duckdb.Error as exc:
        con.close()
        text = _first_line(exc)
        hint = None
        if "lock" in text.lower():
            hint = "another process has the DuckDB file open for writing; close it or query a copy"
        raise RfError(f"data source {name!r} cannot be opened: {text}", hint) from None
    return con


def _timed_out(name: str, timeout_s: float, out_of_time_hint: str | None) -> RfError:
    """A query stopped by its timeout; ``out_of_time_hint`` when that was the calling execution's
    time left (shorter than the query's own timeout)."""
    if out_of_time_hint:
        return RfError(f"query on {name!r} did not finish before the execution's time ran out", out_of_time_hint)
    return RfError(f"query on {name!r} timed out after {timeout_s:g} s",
                   "narrow it (WHERE, LIMIT, fewer columns) or raise the timeout")


def run_duckdb_query(name: str, kind: str, location: str, sql: str, *, params: Any = None, limit: int = 1000,
                     timeout_s: float = 30.0, out_of_time_hint: str | None = None) -> QueryOutput:
    """Run one read-only statement against a file or DuckDB source (see the module docstring)."""
    stmt = check_read_only(sql)
    values = _check_params(params)
    started = time.perf_counter()
    con = open_source(name, kind, location)
    timer = threading.Timer(timeout_s, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        cur = con.execute(f"SELECT * FROM (\n{stmt}\n) AS rf_query LIMIT {int(limit) + 1}", values)
        columns = [d[0] for d in cur.description or []]
        types = [str(d[1]) for d in cur.description or []]
        raw = cur.fetchall()
    except duckdb.InterruptException:
        raise _timed_out(name, timeout_s, out_of_time_hint) from None
    except duckdb.PermissionException as exc:
        raise UsageError(f"the query may only read data source {name!r}: {_first_line(exc)}") from None
    except duckdb.Error as exc:
        raise UsageError(f"query failed: {_first_line(exc)}") from None
    finally:
        timer.cancel()
        con.close()
    return _output(columns, types, raw, limit, started)


def _output(columns: list[str], types: list[str], raw: list[tuple[Any, ...]], limit: int,
            started: float) -> QueryOutput:
    truncated = len(raw) > limit
    names = _unique(columns)
    rows = [{c: jsonable(v) for c, v in zip(names, r, strict=False)} for r in raw[:limit]]
    return QueryOutput(columns=names, types=types, rows=rows, truncated=truncated,
                       elapsed_ms=round((time.perf_counter() - started) * 1000, 2))


def _unique(columns: list[str]) -> list[str]:
    """Column names made unique (``a``, ``a_2``...) so each row can be a dict."""
    seen: dict[str, int] = {}
    out = []
    for c in columns:
        n = seen.get(c, 0) + 1
        seen[c] = n
        out.append(c if n == 1 else f"{c}_{n}")
    return out


# ---------------------------------------------------------------- PostgreSQL

@dataclass
class PgTarget:
    host: str
    port: int
    database: str
    user: str
    ssl: bool


def parse_postgres_dsn(dsn: str) -> PgTarget:
    """``postgresql://USER@HOST[:PORT]/DB[?sslmode=require]`` — a password is refused (it goes in a credential)."""
    parts = urlsplit(dsn.strip()) if isinstance(dsn, str) else None
    if parts is None or parts.scheme not in ("postgres", "postgresql") or not parts.hostname:
        raise UsageError(f"invalid PostgreSQL DSN {dsn!r}", "use postgresql://USER@HOST:PORT/DATABASE")
    if parts.password:
        raise UsageError("the DSN contains a password; rf keeps passwords only in credentials",
                         "remove it from the DSN and pass --credential NAME (rf credentials set NAME)")
    database = unquote(parts.path.lstrip("/"))
    if not database or not parts.username:
        raise UsageError(f"the DSN {dsn!r} must name a user and a database", "postgresql://USER@HOST:PORT/DATABASE")
    query = parse_qs(parts.query)
    sslmode = (query.get("sslmode") or ["prefer"])[0]
    if sslmode not in ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"):
        raise UsageError(f"unknown sslmode {sslmode!r}")
    try:
        port = parts.port or 5432
    except ValueError:
        raise UsageError(f"invalid port in DSN {dsn!r}") from None
    return PgTarget(host=parts.hostname, port=port, database=database, user=unquote(parts.username),
                    ssl=sslmode in ("require", "verify-ca", "verify-full"))


# The statements a PostgreSQL source runs: they are wrapped as ``SELECT * FROM (...)``, which
# only a query can be. DuckDB's SELECT-type SHOW / DESCRIBE / SUMMARIZE / FROM-first are not PostgreSQL.
_PG_QUERY_STARTS = ("SELECT", "WITH", "VALUES", "TABLE")
_PG_LIST_TABLES = ("list tables with: SELECT table_schema, table_name FROM information_schema.tables "
                   "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')")
_PG_PLACEHOLDERS = "PostgreSQL sources take $1, $2, ... placeholders with a list of params (? is an operator there)"
_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/|\()*", re.DOTALL)
_DOLLAR_PARAM = re.compile(r"\$[0-9]")


def _pg_statement(sql: str) -> str:
    """The one query in ``sql`` for a PostgreSQL source (without a trailing ``;``), or a UsageError."""
    try:
        stmt = check_read_only(sql)
    except UsageError as exc:
        if not exc.message.startswith("SQL syntax error"):
            raise
        # DuckDB's parser descends from PostgreSQL's, but PostgreSQL-only syntax (the jsonb ``?``
        # operators among others) does not parse; the checks below and the READ ONLY transaction
        # are the guard then.
        stmt = sql.strip().rstrip(";").strip()
    first = _LEADING_NOISE.sub("", stmt, count=1).split(None, 1)
    keyword = first[0].upper().rstrip(";") if first else ""
    if keyword in ("SHOW", "DESCRIBE", "SUMMARIZE", "FROM", "PIVOT", "UNPIVOT"):
        raise UsageError(f"{keyword} is DuckDB SQL; a PostgreSQL source runs PostgreSQL queries "
                         "(SELECT / WITH / VALUES / TABLE)", _PG_LIST_TABLES)
    if keyword not in _PG_QUERY_STARTS:
        raise UsageError(f"data sources are read-only: {keyword or 'that'} statements are refused",
                         "use a query: SELECT / WITH / VALUES / TABLE")
    return stmt


def run_postgres_query(name: str, dsn: str, password: str | None, sql: str, *, params: Any = None,
                       limit: int = 1000, timeout_s: float = 30.0, out_of_time_hint: str | None = None) -> QueryOutput:
    """One query in a READ ONLY transaction with ``statement_timeout``, always rolled back (pg8000).

    **Parameters are PostgreSQL's own**: ``$1, $2, ...`` filled from a list.
    The SQL reaches the server untouched (nothing is rewritten or
    interpolated on rf's side), so a ``?`` is PostgreSQL's jsonb operator
    (``doc ? 'key'``, ``?|``, ``?&``) and a ``%`` is just a character
    (``LIKE 'a%'``), with or without params. The values travel separately
    (the extended protocol's Bind), never inside the SQL text.

    The extended protocol also accepts exactly one statement, so even SQL
    that DuckDB's parser could not check cannot smuggle a
    ``COMMIT; DELETE ...`` past the read-only transaction.
    """
    stmt = _pg_statement(sql)
    values = _check_params(params)
    if isinstance(values, dict):
        raise UsageError("PostgreSQL sources take params as a list (for $1, $2, ...), not as named params",
                         _PG_PLACEHOLDERS)
    target = parse_postgres_dsn(dsn)
    import pg8000.native  # type: ignore[import-untyped]

    started = time.perf_counter()
    try:
        conn = pg8000.native.Connection(user=target.user, password=password, host=target.host, port=target.port,
                                        database=target.database, timeout=timeout_s + 10,
                                        ssl_context=True if target.ssl else None, application_name="rf")
    except pg8000.native.DatabaseError as exc:
        raise RfError(f"data source {name!r}: cannot connect to PostgreSQL at {target.host}:{target.port}: "
                      f"{_pg_message(exc, password)}",
                      "check the DSN and the credential's password") from None
    except (pg8000.native.InterfaceError, OSError) as exc:
        raise RfError(f"data source {name!r}: cannot reach PostgreSQL at {target.host}:{target.port}: "
                      f"{_pg_message(exc, password)}", "check that the server is running") from None
    try:
        conn.run("START TRANSACTION READ ONLY")
        conn.run(f"SET LOCAL statement_timeout = {max(1, int(timeout_s * 1000))}")
        context = conn.execute_unnamed(f"SELECT * FROM (\n{stmt}\n) AS rf_query LIMIT {int(limit) + 1}",
                                       vals=list(values or []))
        described = context.columns or []
        columns = [str(c["name"]) for c in described]
        types = [_pg_type(c.get("type_oid")) for c in described]
        raw = [tuple(r) for r in context.rows or []]
    except pg8000.native.DatabaseError as exc:
        raise _pg_query_error(name, exc, password, stmt, values, timeout_s, out_of_time_hint) from None
    except (pg8000.native.InterfaceError, OSError) as exc:
        # The socket timed out or the server went away mid-query (statement_timeout should come first).
        raise RfError(f"query on {name!r}: lost the connection to PostgreSQL at {target.host}:{target.port}: "
                      f"{_pg_message(exc, password)}", "check that the server is running, then retry") from None
    finally:
        try:
            conn.run("ROLLBACK")  # nothing a query did survives it, whatever the role may do
            conn.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real error
            pass
    return _output(columns, types, raw, limit, started)


def check_postgres_source(name: str, dsn: str, password: str | None, *, timeout_s: float = 15) -> None:
    """Connect to PostgreSQL source ``name`` and run a trivial query (raises the query's RfError)."""
    run_postgres_query(name, dsn, password, "SELECT 1", limit=1, timeout_s=timeout_s)


def _pg_query_error(name: str, exc: BaseException, password: str | None, stmt: str, values: list[Any] | None,
                    timeout_s: float, out_of_time_hint: str | None) -> RfError:
    """A failed PostgreSQL query as a clear 4xx error, by SQLSTATE (messages may be translated)."""
    arg = exc.args[0] if exc.args else None
    code = str(arg.get("C", "")) if isinstance(arg, dict) else ""
    message = _pg_message(exc, password)
    if code == "57014" and "user request" not in message:  # query_canceled: our statement_timeout
        if out_of_time_hint:
            return _timed_out(name, timeout_s, out_of_time_hint)
        return RfError(f"query on {name!r} timed out after {timeout_s:g} s (cancelled by the PostgreSQL "
                       "statement timeout)",
                       "narrow it (WHERE, LIMIT, fewer columns) or raise the timeout (--timeout SECONDS, "
                       "or timeout_s= in ctx.data(...).query)")
    if code.startswith("25") or (code == "0A000" and "data-modifying" in message):
        # 25006 read_only_sql_transaction, 25001 (turning read-only off), a DELETE/INSERT in a WITH.
        return UsageError(f"data sources are read-only: {message}",
                          "queries on PostgreSQL sources run in a READ ONLY transaction; use SELECT")
    hint = None
    if code == "42501":
        hint = "the data source's PostgreSQL role lacks the privilege: GRANT SELECT ... TO that role"
    elif (values or code in ("08P01", "42P02")) and not _DOLLAR_PARAM.search(stmt):
        hint = _PG_PLACEHOLDERS
    elif code in ("08P01", "42P02"):
        hint = f"give one param per placeholder ($1..$N); got {len(values or [])}"
    return UsageError(f"query failed: {message}", hint)


def _pg_message(exc: BaseException, password: str | None) -> str:
    """The first line of a pg8000 error's message, with the password (if PostgreSQL echoed it) masked."""
    arg = exc.args[0] if exc.args else exc
    text = str(arg.get("M", arg)) if isinstance(arg, dict) else str(arg)
    if not text.strip():
        text = type(exc).__name__
    if password:
        text = text.replace(password, "***")
    return text.splitlines()[0] if text else type(exc).__name__


_PG_TYPES = {16: "BOOLEAN", 20: "BIGINT", 21: "SMALLINT", 23: "INTEGER", 25: "TEXT", 700: "REAL",
             701: "DOUBLE PRECISION", 1043: "VARCHAR", 1082: "DATE", 1114: "TIMESTAMP", 1184: "TIMESTAMPTZ",
             1700: "NUMERIC", 114: "JSON", 3802: "JSONB", 2950: "UUID"}


def _pg_type(oid: Any) -> str:
    return _PG_TYPES.get(oid, str(oid)) if isinstance(oid, int) else str(oid)


def probe_file(name: str, kind: str, location: str) -> list[str]:
    """Columns of a file/DuckDB source (what ``rf data add`` checks before storing anything)."""
    if kind == "duckdb":
        out = run_duckdb_query(name, kind, location, "SHOW ALL TABLES", limit=10_000, timeout_s=30)
        return [f"{r.get('schema', 'main')}.{r['name']}" for r in out.rows]
    out = run_duckdb_query(name, kind, location, f"DESCRIBE {_ident(name)}", limit=10_000, timeout_s=30)
    return [str(r["column_name"]) for r in out.rows]


__all__ = ["KINDS", "DataSourcesMixin", "QueryOutput", "check_read_only", "json", "parse_postgres_dsn",
           "probe_file", "run_duckdb_query", "run_postgres_query"]
