"""The batching writer on PostgreSQL: rf.store.writer.BatchWriter's thread, queue, groups, checks
and retry-apart, with each table's rows of a batch written by one ``COPY ... FROM STDIN``.

Only the database calls differ (:meth:`PgBatchWriter._commit`, ``_insert``, ``_delete``,
``_load_columns``): a batch is one transaction on the writer's own connection, its rows go in
through psycopg's ``cursor.copy`` (text format, one ``write_row`` per row), its deletes are one
``DELETE ... WHERE column = ANY(%s)`` per key. PostgreSQL text cannot hold NUL characters, so
:meth:`PgBatchWriter.check` refuses a row with one (DuckDB stores them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

from rf.store.writer import _DELETE, BatchWriter, _Column

#: information_schema data types as the DuckDB names rf.store.writer._Column knows.
_TYPES = {
    "character varying": "VARCHAR", "text": "VARCHAR", "bigint": "BIGINT", "integer": "INTEGER",
    "smallint": "SMALLINT", "double precision": "DOUBLE", "real": "FLOAT", "boolean": "BOOLEAN",
    "timestamp without time zone": "TIMESTAMP", "bytea": "BLOB",
}


class PgBatchWriter(BatchWriter):
    """BatchWriter over a psycopg connection (autocommit; the writer's alone)."""

    def __init__(self, connect: Callable[[], Any], *, columns: Callable[[str], list[tuple[str, str, bool]]],
                 **kwargs: Any) -> None:
        con = connect()
        self._pg = con
        self._reconnect = connect
        self._column_source = columns
        self._copies: dict[str, str] = {}
        super().__init__(con, **kwargs)

    def check(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        super().check(table, rows)
        for row in rows:
            for column, value in zip(self._columns[table], row):  # noqa: B905 - checked above
                if value.__class__ is str and "\x00" in value:
                    self._refuse(table, f"column {column.name!r} holds a NUL character, which PostgreSQL text"
                                        " cannot store")

    def _load_columns(self, table: str) -> tuple[_Column, ...]:
        with self._columns_lock:
            found = self._columns.get(table)
            if found is not None:
                return found
            rows = self._column_source(table)
            if not rows:
                raise ValueError(f"no table {table!r}")
            found = self._columns[table] = tuple(
                _Column(name, _TYPES.get(data_type, data_type.upper()), nullable) for name, data_type, nullable in rows)
            return found

    def _insert(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        copy_sql = self._copies.get(table)
        if copy_sql is None:
            names = ", ".join(c.name for c in (self._columns.get(table) or self._load_columns(table)))
            copy_sql = self._copies[table] = f"COPY {table} ({names}) FROM STDIN"
        with self._pg.cursor() as cur, cur.copy(copy_sql) as copy:
            write = copy.write_row
            for row in rows:
                write(row)

    def _delete(self, key: str, rows: list[tuple[Any, ...]]) -> None:
        table, column = key[len(_DELETE):].split(".", 1)
        with self._pg.cursor() as cur:
            cur.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", ([r[0] for r in rows],))

    def _commit(self, batch: dict[str, list[tuple[Any, ...]]]) -> None:
        if self._pg.closed or self._pg.broken:  # the server restarted: a new connection for this batch
            with contextlib.suppress(Exception):
                self._pg.close()
            self._pg = self._reconnect()
        deletes = [key for key in batch if key.startswith(_DELETE)]
        with self._pg.transaction():
            for table, rows in batch.items():
                if not table.startswith(_DELETE):
                    self._insert(table, rows)
            for key in deletes:
                self._delete(key, batch[key])

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        with contextlib.suppress(Exception):
            self._pg.close()
