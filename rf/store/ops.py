"""The store as a whole: what it holds (``rf store info``) and a DuckDB store copied into an
empty PostgreSQL database (``rf store copy --to postgresql://...``).

The copy
--------
- **Source.** The workspace's DuckDB file, opened (and migrated, as any command does) by this
  process: nobody else writes to it meanwhile (DuckDB's lock refuses a running server).
- **Target.** A database with no tables, or with rf's schema and no rows (a workspace whose
  ``[store] url`` already named it made the schema). Anything else is refused before a row moves:
  rf never merges two stores. The target is opened as :class:`rf.store.pg.PgStore` (its
  migrations, functions, indexes and vector kind, exactly as ``rf serve`` would make them).
- **Tables.** Every table of rf's schema in the order the migrations create them
  (:func:`schema_tables`), then each knowledge base's term table and live vector table (made
  as the PostgreSQL store makes them: pgvector ``vector(dim)`` or float4 ``bytea``). Columns
  are matched by name; a table whose columns differ stops the copy.
- **Rows.** Read from DuckDB in batches of :data:`BATCH_ROWS` and written by one ``COPY ... FROM
  STDIN`` per table (as rf.store.pg_writer does); text holding a NUL character (which
  PostgreSQL text cannot store) is found by DuckDB before anything is written.
- **All or nothing.** One transaction: a failure leaves the target as it was. Afterwards the
  rows of each table are counted on the target and compared, and the target is ANALYZEd.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rf.errors import StoreError, UsageError
from rf.models import StoreCopy, StoreInfo, StoreTable
from rf.store.knowledge import terms_table
from rf.store.migrations import MIGRATIONS

if TYPE_CHECKING:
    from rf.store.db import Store
    from rf.store.pg import PgStore

#: Rows read from DuckDB at a time while a table is copied.
BATCH_ROWS = 5000
_KB_TABLE = re.compile(r"kb_(\d+)_(terms|v\d+)")


def schema_tables() -> list[str]:
    """rf's tables in the order the migrations create them (those a later step drops left out)."""
    tables: list[str] = []
    for step in MIGRATIONS:
        for statement in step:
            created = re.match(r"\s*CREATE TABLE (?:IF NOT EXISTS )?(\w+)", statement)
            if created and created.group(1) not in tables:
                tables.append(created.group(1))
            dropped = re.match(r"\s*DROP TABLE (?:IF EXISTS )?(\w+)", statement)
            if dropped and dropped.group(1) in tables:
                tables.remove(dropped.group(1))
    return tables


def _kb_tables(store: Any) -> list[tuple[str, int | None]]:
    """Each knowledge base's term table, and its live vector table with the vectors' size."""
    out: list[tuple[str, int | None]] = []
    for kb_id, vectors, dim in store.cursor().execute("SELECT id, vectors, dim FROM kbs ORDER BY id").fetchall():
        out.append((terms_table(int(kb_id)), None))
        if vectors:
            out.append((str(vectors), int(dim)))
    return out


def _present(store: Any) -> set[str]:
    """The tables of *store*'s own schema."""
    if store.kind == "postgresql":
        sql = ("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
               " AND table_type = 'BASE TABLE'")
    else:
        sql = ("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
               " AND table_catalog = current_database() AND table_type = 'BASE TABLE'")
    return {r[0] for r in store.cursor().execute(sql).fetchall()}


def _count(store: Any, table: str) -> int:
    row = store.cursor().execute(f'SELECT count(*) FROM "{table}"').fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------- rf store info
def store_info(store: Any) -> StoreInfo:
    """What *store* (either kind) is and holds: rows of every table of rf's schema, then of each
    knowledge base's tables."""
    from rf.store import describe_store

    store.flush()
    present = _present(store)
    names = [t for t in schema_tables() if t in present] + [t for t, _ in _kb_tables(store) if t in present]
    tables = [StoreTable(name, _count(store, name)) for name in names]
    info = StoreInfo(kind=store.kind, store=describe_store(store),
                     schema_version=int(store.schema_version), bytes=int(store.store_bytes()), tables=tables,
                     rows=sum(t.rows for t in tables), replicas=store.live_replicas())
    if info.kind == "postgresql":
        info.max_connections = int(store.max_connections)
        info.pool = dict(store.pool_stats())
    return info


# ---------------------------------------------------------------- rf store copy
def _refuse_unless_empty(target: PgStore, shown: str) -> None:
    """Refuse a target that holds anything: tables rf does not know, or rows in rf's."""
    ours = set(schema_tables())
    present = _present(target)
    foreign = sorted(t for t in present if t not in ours and not _KB_TABLE.fullmatch(t))
    if foreign:
        listed = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise UsageError(f"the PostgreSQL database {shown} is not empty: it has tables that are not rf's ({listed})",
                         "copy into a database of its own: createdb NAME (or CREATE DATABASE NAME), then"
                         " rf store copy --to postgresql://USER@HOST:PORT/NAME")
    filled = [f"{t} ({n:,} rows)" for t in sorted(present - {"meta"}) if (n := _count(target, t))]
    kb_tables = sorted(t for t in present if _KB_TABLE.fullmatch(t))
    if filled or kb_tables:
        listed = ", ".join((filled + kb_tables)[:5])
        raise UsageError(f"the PostgreSQL database {shown} already holds an rf store: {listed}",
                         "rf store copy only fills an empty database (it never merges two stores): copy into a new"
                         " one (createdb NAME), or drop this one's data first if you are sure it is not needed")


def _nul_check(source: Store, table: str, columns: list[tuple[str, str]]) -> None:
    """Refuse text with a NUL character (PostgreSQL text cannot store it), found by DuckDB."""
    texts = [name for name, kind in columns if kind.upper().startswith("VARCHAR")]
    if not texts:
        return
    sql = "SELECT " + ", ".join(f'count(*) FILTER (WHERE contains("{c}", ?))' for c in texts) + f' FROM "{table}"'
    counts = source.cursor().execute(sql, ["\x00"] * len(texts)).fetchone() or ()
    bad = [f"{table}.{c} ({n:,} rows)" for c, n in zip(texts, counts, strict=False) if n]
    if bad:
        raise UsageError(f"text with a NUL character in {', '.join(bad)}: PostgreSQL text cannot store it,"
                         " so the store cannot be copied as it is",
                         "delete those rows (old executions: rf gc with a shorter [retention]), then copy again")


def _duck_columns(source: Store, table: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in source.cursor().execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'main'"
        " AND table_catalog = current_database() AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()]


def _pg_columns(cur: Any, table: str) -> list[str]:
    return [r[0] for r in cur.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema()"
        " AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()]


def _copy_rows(source: Store, con: Any, table: str, columns: list[str],
               convert: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None = None) -> int:
    """Every row of DuckDB's *table* into PostgreSQL's, by one COPY; the number of rows."""
    names = ", ".join(f'"{c}"' for c in columns)
    reader = source.cursor().execute(f'SELECT {names} FROM "{table}"')
    count = 0
    with con.cursor() as cur, cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
        while True:
            rows = reader.fetchmany(BATCH_ROWS)
            if not rows:
                return count
            for row in rows:
                copy.write_row(convert(row) if convert is not None else row)
            count += len(rows)


def _vector_converter(target: PgStore, cur: Any, table: str) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """DuckDB's ``FLOAT[dim]`` embedding as the target table holds it (pgvector text, or float4 bytes)."""
    import numpy as np

    if target._vector_kind(cur, table) == "pgvector":
        def as_text(row: tuple[Any, ...]) -> tuple[Any, ...]:
            values = np.asarray(row[3], dtype=np.float32).tolist()
            return (*row[:3], "[" + ",".join(map(repr, values)) + "]")

        return as_text

    def as_bytes(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*row[:3], np.asarray(row[3], dtype="<f4").tobytes())

    return as_bytes


def copy_to_postgres(source: Store, target: PgStore,
                     progress: Callable[[str, int], None] | None = None) -> StoreCopy:
    """Copy every table of the DuckDB *source* into *target* (opened, migrated, checked empty here);
    *progress* is told each table and its rows as it is done."""
    started = time.perf_counter()
    shown = target.shown_url
    _refuse_unless_empty(target, shown)
    if source.schema_version != target.schema_version:  # both were migrated by this rf when opened
        raise StoreError(f"the DuckDB store is at schema v{source.schema_version}, the PostgreSQL one at"
                         f" v{target.schema_version}", "this is a bug in rf: report it with the command you ran")
    source.flush()
    present = _present(source)
    plan: list[tuple[str, int | None, bool]] = [(t, None, False) for t in schema_tables() if t in present]
    plan += [(t, dim, True) for t, dim in _kb_tables(source) if t in present]
    planned = {t for t, _, _ in plan}
    skipped = sorted(present - planned)
    duck_columns = {t: _duck_columns(source, t) for t, _, _ in plan}
    for table, _, _ in plan:
        _nul_check(source, table, duck_columns[table])
    copied: list[StoreTable] = []
    with target.transaction() as cur:
        con = cur.connection
        for table, dim, made_here in plan:
            convert = None
            if made_here and dim is None:  # a knowledge base's term table, as PgOverrides.insert_kb makes it
                cur.execute(f"CREATE TABLE {table} (term INTEGER NOT NULL, chunk_id BIGINT NOT NULL,"
                            " tf INTEGER NOT NULL)")
            elif made_here and dim is not None:  # its vectors, as PgOverrides._create_vectors makes them
                target._create_vectors(cur, table, dim)
                convert = _vector_converter(target, cur, table)
            columns = _pg_columns(cur, table)
            duck = [c for c, _ in duck_columns[table]]
            if sorted(duck) != sorted(columns):
                raise StoreError(f"the table {table} has other columns in the DuckDB store ({', '.join(duck)})"
                                 f" than in PostgreSQL ({', '.join(columns)}); nothing was copied",
                                 "report this message with the rf version you run")
            if table == "meta":  # the target wrote its own schema_version: the other keys (if any) only
                rows = [r for r in source.cursor().execute("SELECT key, value FROM meta").fetchall()
                        if r[0] != "schema_version"]
                for key, value in rows:
                    cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, value])
                count = len(rows)
            else:
                count = _copy_rows(source, con, table, columns, convert)
            if made_here and dim is None:
                cur.execute(f"CREATE INDEX {table}_term ON {table} (term)")
            copied.append(StoreTable(table, count))
            if progress is not None:
                progress(table, count)
    for item in copied:
        if item.name != "meta" and (found := _count(target, item.name)) != item.rows:
            raise StoreError(f"after the copy, {item.name} holds {found:,} rows in PostgreSQL, not {item.rows:,}",
                             "report this message; the DuckDB store was not changed")
    target.cursor().execute("ANALYZE")
    return StoreCopy(source=str(source.path), target=shown, schema_version=target.schema_version, tables=copied,
                     rows=sum(t.rows for t in copied), vectors=target.vector_mode, skipped=skipped,
                     duration_ms=(time.perf_counter() - started) * 1000)
