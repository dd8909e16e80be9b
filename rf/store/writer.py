"""The batching writer: one thread, one INSERT per table per batch, read-your-writes on demand.

A small synchronous INSERT costs ~0.6 ms in DuckDB, and a commit ~1.5 ms
whatever the number of rows. Executions, spans, session messages and memory
writes arrive one by one from many request threads, so they are queued here
and written by a single thread (with its own cursor) in batches committed at
most every ``linger_s`` (0.5 s): two commits a second under any load, so the
fixed costs stay near 1 % of a core. A crash (not a clean stop, which
flushes) can lose what was queued in that last half second: an execution and
what it wrote are queued as one group (:meth:`BatchWriter.begin_group`), so
they are committed, or lost, together. ``flush()`` commits everything queued
before it at once, which is how a caller reads its own write.

**Off the GIL.** A batch's rows of one table are encoded as one JSON text
(msgspec: about a microsecond a row) and inserted by one statement that
parses it inside DuckDB (``from_json``), which runs without Python's GIL.
DuckDB's Appender, the obvious tool, converts each Python value while
holding the GIL: about 9 µs a row, during which the server's event loop,
the thread that answers requests, cannot run. Through JSON, DuckDB spends
more CPU (an executions row: ~25 µs instead of ~15 µs) but on the other
core, in parallel with the event loop; on a 2-core machine under full load
that is a wash for throughput (bench/README.md), and the event loop no longer
stalls for ~6 ms per batch. Values round-trip exactly (strings, including NUL and
non-BMP characters, integers to 64 bits, floats, naive datetimes); a table
with a column type JSON text cannot carry, or a batch that cannot be encoded
as JSON, goes through the Appender instead, as does the table-by-table retry after a
failed batch.

**Deletes.** Appends are the rule; :meth:`BatchWriter.delete` queues the removal of rows
by key (an execution's ``running`` marker, deleted with its final row: see
rf.store.executions). A batch applies its deletes after all of its inserts, in the same
transaction, so a row queued before its deletion never outlives it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from rf.jsonfast import dumpb

log = logging.getLogger("rf.store.writer")

_STOP = object()
#: Pseudo-table of queued deletes: ``_DELETE + "table.column"`` -> rows of one key value.
_DELETE = "\x00delete:"
#: Column types a row's JSON text carries exactly (cast from the text DuckDB's from_json gives).
_CASTABLE = frozenset({"BIGINT", "INTEGER", "SMALLINT", "DOUBLE", "BOOLEAN", "TIMESTAMP"})


class _Barrier:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


class BatchWriter:
    """Queue rows for tables and append them in batches from one thread.

    The thread wakes once per batch, not once per row: after the first row
    of a batch arrives it waits ``linger_s`` (cut short by :meth:`flush`),
    then takes everything queued at once. Request threads only append to a
    queue nobody is waiting on, so queuing a row never hands the GIL over.
    """

    def __init__(self, con: Any, *, max_batch: int = 10000, linger_s: float = 0.5) -> None:
        self._con = con.cursor()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._local = threading.local()  # a thread's open group() of rows
        self._hurry = threading.Event()  # set by flush()/close(): commit what is queued now
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._errors: list[BaseException] = []
        self._appenders: dict[str, Any] = {}  # table -> DuckDB appender (writer thread only)
        self._inserts: dict[str, str | None] = {}  # table -> its INSERT from JSON (None: use the appender)
        self._closed = False
        self._lock = threading.Lock()  # held while a batch is being applied
        self._thread = threading.Thread(target=self._run, name="rf-store-writer", daemon=True)
        self._thread.start()

    def put(self, table: str, row: Sequence[Any]) -> None:
        """Queue one row (values in table column order)."""
        if self._closed:
            raise RuntimeError("writer is closed")
        group: dict[str, list[tuple[Any, ...]]] | None = getattr(self._local, "group", None)
        if group is None:
            self._queue.put({table: [tuple(row)]})
        elif table in group:
            group[table].append(tuple(row))
        else:
            group[table] = [tuple(row)]

    def put_many(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Queue rows of one table."""
        if self._closed:
            raise RuntimeError("writer is closed")
        if not rows:
            return
        group: dict[str, list[tuple[Any, ...]]] | None = getattr(self._local, "group", None)
        if group is not None:
            group.setdefault(table, []).extend(tuple(row) for row in rows)
        else:
            self._queue.put({table: [tuple(row) for row in rows]})

    def delete(self, table: str, column: str, value: Any) -> None:
        """Queue the deletion of *table*'s rows whose *column* equals *value*: applied in the
        batch that holds it, after that batch's inserts (in a group, with the group's rows)."""
        self.put(f"{_DELETE}{table}.{column}", (value,))

    def hurry(self) -> None:
        """Commit what is queued now rather than after the linger, without waiting for it."""
        self._hurry.set()

    def begin_group(self) -> None:
        """Rows this thread queues until :meth:`end_group` are committed in the same batch
        (e.g. an execution's record, its spans, session messages and memory writes: all
        of them or, after a crash, none). Groups do not nest."""
        self._local.group = {}

    def end_group(self) -> None:
        """Queue the rows of this thread's group (call it in a ``finally``)."""
        rows = getattr(self._local, "group", None)
        self._local.group = None
        if rows and not self._closed:
            self._queue.put(rows)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until every row queued before this call is committed."""
        if self._closed:
            return
        barrier = _Barrier()
        self._queue.put(barrier)
        self._hurry.set()
        barrier.event.wait(timeout)
        if self._errors:
            err = self._errors.pop(0)
            raise err

    def close(self) -> None:
        """Flush and stop the thread."""
        if self._closed:
            return
        self._queue.put(_STOP)
        self._hurry.set()
        self._thread.join(timeout=30)
        self._closed = True
        try:
            self._appenders.clear()  # everything was flushed by the last batch
            self._con.close()
        except Exception:  # noqa: BLE001 - closing must never raise
            pass

    # ------------------------------------------------------------ thread
    def _run(self) -> None:
        get_nowait = self._queue.get_nowait
        backlog = False
        while True:
            if backlog:
                try:
                    item = get_nowait()
                except queue.Empty:
                    backlog = False
                    continue
            else:
                item = self._queue.get()
            if not backlog and isinstance(item, dict):
                # A batch has started: let it gather (flush() or close() cut this short).
                self._hurry.wait(self._linger_s)
            self._hurry.clear()
            batch: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
            barriers: list[_Barrier] = []
            stop = False
            count = 0
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                else:
                    for table, rows in item.items():
                        batch[table].extend(rows)
                        count += len(rows)
                if stop or count >= self._max_batch:
                    break
                try:
                    item = get_nowait()
                except queue.Empty:
                    break
            backlog = count >= self._max_batch and not stop
            if batch:
                self._apply(batch)
            for barrier in barriers:
                barrier.event.set()
            if stop:
                return

    def _appender(self, table: str) -> Any:
        """The table's appender, made once: creating one costs about a millisecond."""
        appender = self._appenders.get(table)
        if appender is None:
            appender = self._appenders[table] = self._con.appender(table)
        return appender

    def _insert_sql(self, table: str) -> str | None:
        """The table's INSERT from one JSON text of rows (made once); None when a column's
        type cannot travel as JSON text (the table then uses the appender)."""
        if table in self._inserts:
            return self._inserts[table]
        columns = self._con.execute(
            "SELECT data_type FROM duckdb_columns() WHERE database_name = current_database() AND schema_name = 'main'"
            " AND table_name = ? ORDER BY column_index", [table]
        ).fetchall()
        values = []
        for number, (data_type,) in enumerate(columns, start=1):
            if data_type == "VARCHAR":
                values.append(f"r[{number}]")
            elif data_type in _CASTABLE:
                values.append(f"CAST(r[{number}] AS {data_type})")
            else:
                values = []
                break
        sql = (f"INSERT INTO {table} SELECT {', '.join(values)} "
               f"FROM (SELECT unnest(from_json(?, '[[\"VARCHAR\"]]')) AS r)") if values else None
        self._inserts[table] = sql
        return sql

    def _insert(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        """Write one table's rows of a batch: one INSERT parsing JSON (without the GIL), or
        the appender when the rows or the table cannot go that way."""
        sql = self._insert_sql(table)
        if sql is not None:
            try:
                text = dumpb(rows).decode("utf-8")
            except (TypeError, ValueError):  # e.g. a datetime next to a value msgspec refuses
                pass
            else:
                self._con.execute(sql, (text,))
                return
        appender = self._appender(table)
        appender.append_rows(rows)
        appender.flush()

    def _drop_appenders(self) -> None:
        """Forget the appenders, discarding rows they hold (after a failed batch)."""
        for appender in self._appenders.values():
            try:
                appender.clear()
            except Exception:  # noqa: BLE001 - it is being dropped anyway
                pass
        self._appenders.clear()

    def _delete(self, key: str, rows: list[tuple[Any, ...]]) -> None:
        """Apply queued deletes (``key``: ``_DELETE + "table.column"``)."""
        table, column = key[len(_DELETE):].split(".", 1)
        self._con.execute(f"DELETE FROM {table} WHERE {column} IN (SELECT unnest(?))", ([r[0] for r in rows],))

    def _apply(self, batch: dict[str, list[tuple[Any, ...]]]) -> None:
        """Append every table's rows and commit them together (one commit per batch, not per table);
        queued deletes come last."""
        deletes = [key for key in batch if key.startswith(_DELETE)]
        if deletes:
            batch = {**{k: v for k, v in batch.items() if not k.startswith(_DELETE)},
                     **{k: batch[k] for k in deletes}}
        with self._lock:
            try:
                self._con.execute("BEGIN TRANSACTION")
                for table, rows in batch.items():
                    if table.startswith(_DELETE):
                        self._delete(table, rows)
                    else:
                        self._insert(table, rows)
                self._con.execute("COMMIT")
                return
            except Exception as exc:  # noqa: BLE001 - fall back to table by table below
                log.warning("batch commit failed (%s); retrying table by table", exc)
                self._drop_appenders()
                try:
                    self._con.execute("ROLLBACK")
                except Exception:  # noqa: BLE001 - no transaction left to roll back
                    pass
            for table, rows in batch.items():
                if table.startswith(_DELETE):
                    try:
                        self._delete(table, rows)
                    except Exception as exc:  # noqa: BLE001 - reported to the next flush()
                        log.error("could not delete %d rows of %s: %s", len(rows), table[len(_DELETE):], exc)
                        self._errors.append(exc)
                    continue
                appender = self._con.appender(table)
                try:
                    appender.append_rows(rows)
                    appender.flush()
                except Exception as exc:  # noqa: BLE001 - reported to the next flush()
                    log.error("could not write %d rows to %s: %s", len(rows), table, exc)
                    self._errors.append(exc)
                    appender.clear()
