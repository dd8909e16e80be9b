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
as JSON, goes through the Appender instead.

**One bad row costs only its own group.** The store checks each row where it is queued
(:meth:`BatchWriter.check`: every value of the column's type, no NULL where the column
forbids it), so a bad value is refused to the caller that sent it, and a group in which a
row was refused is dropped whole at :meth:`BatchWriter.end_group`. Should a batch's
transaction still fail (a row the checks let through, a value DuckDB cannot convert), it
is rolled back and retried apart: halves of the batch, each in its own transaction, split
again while they fail, down to the one group (or ungrouped ``put``) that fails alone. That
group is dropped, all of it (an execution, its spans, session messages and memory writes
are committed together or not at all), counted (:attr:`BatchWriter.failed_groups`) and
logged once, without its rows' contents; its deletes (a ``running`` marker) are still
applied. Whoever queued it can learn it with :meth:`BatchWriter.wait`; nobody else sees an
error: :meth:`BatchWriter.flush` reports no other caller's failure. The retry costs
nothing while batches commit: a few transactions per bad group (log2 of the batch's
groups), only when one fails.

**Deletes.** Appends are the rule; :meth:`BatchWriter.delete` queues the removal of rows
by key (an execution's ``running`` marker, deleted with its final row: see
rf.store.executions). A batch applies its deletes after all of its inserts, in the same
transaction, so a row queued before its deletion never outlives it.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import queue
import re
import threading
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from rf.errors import StoreError, UsageError
from rf.jsonfast import dumpb

log = logging.getLogger("rf.store.writer")

_STOP = object()
#: Pseudo-table of queued deletes: ``_DELETE + "table.column"`` -> rows of one key value.
_DELETE = "\x00delete:"
#: Column types a row's JSON text carries exactly (cast from the text DuckDB's from_json gives).
_CASTABLE = frozenset({"BIGINT", "INTEGER", "SMALLINT", "DOUBLE", "BOOLEAN", "TIMESTAMP"})


#: How many failed groups one batch logs one by one (then one line for the rest).
_LOG_FAILURES = 10
#: Integer column types and their bounds (a Python int is unbounded: DuckDB's are not).
_INT_BOUNDS = {"BIGINT": 63, "INTEGER": 31, "SMALLINT": 15, "TINYINT": 7}
#: Quoted text in a DuckDB error (a value it could not convert): not logged, it may be a secret.
_QUOTED = re.compile(r"'[^']*'")


class _Barrier:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = threading.Event()


class Group(dict[str, list[tuple[Any, ...]]]):
    """The rows one :meth:`BatchWriter.begin_group` ... :meth:`BatchWriter.end_group` queued,
    by table: committed together or not at all. ``error`` is set when its transaction failed
    (final once a :meth:`BatchWriter.flush` that started after ``end_group`` returned)."""

    __slots__ = ("error", "refused")

    def __init__(self) -> None:
        super().__init__()
        self.error: BaseException | None = None
        self.refused = False  #: a row of it was refused by check(): end_group() drops it


class _Column:
    """What :meth:`BatchWriter.check` asks of one column's values."""

    __slots__ = ("bits", "finite", "name", "nullable", "plain", "types", "what")

    def __init__(self, name: str, data_type: str, nullable: bool) -> None:
        self.name = name
        self.nullable = nullable
        self.bits = _INT_BOUNDS.get(data_type, 0)
        self.finite = data_type in ("DOUBLE", "FLOAT", "REAL")
        if data_type == "VARCHAR":
            self.types: tuple[type, ...] = (str,)
            self.what = "text"
        elif self.bits:
            self.types, self.what = (int,), f"an integer ({self.bits + 1}-bit)"
        elif self.finite:
            self.types, self.what = (int, float), "a finite number"
        elif data_type == "BOOLEAN":
            self.types, self.what = (bool,), "true or false"
        elif data_type.startswith("TIMESTAMP"):
            self.types, self.what = (_dt.datetime,), "a datetime"
        else:  # a type rf's writer tables do not use: DuckDB judges
            self.types, self.what = (object,), data_type
        #: The class whose values need no other check (text, a datetime); None for numbers (ranges).
        self.plain: type | None = self.types[0] if self.types[0] in (str, _dt.datetime) else None

    def problem(self, value: Any) -> str | None:
        """Why *value* cannot go in this column (None: it can). Never shows the value."""
        if value is None:
            return None if self.nullable else "must not be NULL"
        if not isinstance(value, self.types) or (value.__class__ is bool and self.types[0] is not bool):
            return f"must be {self.what}, not {type(value).__name__}"
        number: Any = value  # (not narrowed to `object` by the isinstance above)
        if self.bits and not -(1 << self.bits) <= number < (1 << self.bits):
            return f"must be {self.what}: the value is out of range"
        if self.finite and not math.isfinite(number):
            return f"must be {self.what}, not NaN or infinite"
        return None


class BatchWriter:
    """Queue rows for tables and append them in batches from one thread.

    The thread wakes once per batch, not once per row: after the first row
    of a batch arrives it waits ``linger_s`` (cut short by :meth:`flush`),
    then takes everything queued at once. Request threads only append to a
    queue nobody is waiting on, so queuing a row never hands the GIL over.
    """

    def __init__(self, con: Any, *, max_batch: int = 10000, linger_s: float = 0.5,
                 max_pending: int = 100_000) -> None:
        self._con = con.cursor()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        #: The queue is bounded: at most *max_pending* puts and groups wait for the writer; one
        #: more waits (the producer slows down) instead of the queue growing without limit.
        self.max_pending = max_pending
        self._slots = threading.Semaphore(max_pending)
        #: How many times a producer had to wait for room in the queue.
        self.producer_waits = 0
        self._local = threading.local()  # a thread's open group() of rows
        self._hurry = threading.Event()  # set by flush()/close(): commit what is queued now
        self._max_batch = max_batch
        self._linger_s = linger_s
        self._root = con
        self._columns: dict[str, tuple[_Column, ...]] = {}  # table -> its columns, for check()
        self._columns_lock = threading.Lock()
        #: Groups (or ungrouped puts) whose transaction failed: dropped whole, logged once.
        self.failed_groups = 0
        #: Rows those groups held.
        self.failed_rows = 0
        #: Batches whose transaction failed and that were retried apart.
        self.retried_batches = 0
        #: Groups dropped at end_group() because check() refused one of their rows.
        self.refused_groups = 0
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
            self._enqueue({table: [tuple(row)]})
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
            self._enqueue({table: [tuple(row) for row in rows]})

    def delete(self, table: str, column: str, value: Any) -> None:
        """Queue the deletion of *table*'s rows whose *column* equals *value*: applied in the
        batch that holds it, after that batch's inserts (in a group, with the group's rows)."""
        self.put(f"{_DELETE}{table}.{column}", (value,))

    def hurry(self) -> None:
        """Commit what is queued now rather than after the linger, without waiting for it."""
        self._hurry.set()

    def begin_group(self) -> None:
        """Rows this thread queues until :meth:`end_group` are committed in one transaction
        (e.g. an execution's record, its spans, session messages and memory writes: all of
        them or none, whether a crash or a bad row gets in the way). Groups do not nest."""
        self._local.group = Group()

    def end_group(self) -> Group | None:
        """Queue the rows of this thread's group (call it in a ``finally``); the group, for
        :meth:`wait` (None if it queued nothing). A group in which :meth:`check` refused a row
        is dropped (its caller got the error), except for its deletes."""
        rows: Group | None = getattr(self._local, "group", None)
        self._local.group = None
        if not rows or self._closed:
            return None
        if rows.refused:
            self.refused_groups += 1
            deletes = {k: v for k, v in rows.items() if k.startswith(_DELETE)}
            if deletes:
                self._enqueue(deletes)
            return None
        self._enqueue(rows)
        return rows

    def _enqueue(self, item: dict[str, list[tuple[Any, ...]]]) -> None:
        """Queue rows for the writer, waiting while *max_pending* items already wait."""
        if not self._slots.acquire(blocking=False):
            self.producer_waits += 1
            self._hurry.set()
            while not self._slots.acquire(timeout=5.0):
                if self._closed:
                    raise RuntimeError("writer is closed")
                log.warning("the store writer is behind: %d batches of rows wait; requests that record "
                            "rows wait for it", self.max_pending)
        self._queue.put(item)

    def check(self, table: str, rows: Sequence[Sequence[Any]]) -> None:
        """Refuse (UsageError naming the table and column, never the value) a row that would
        fail *table*'s constraints: a value count other than the table's, a NULL where the
        column forbids it, a value of another type. Inside a group, a refused row makes
        :meth:`end_group` drop the group. The store calls it where it queues rows."""
        columns = self._columns.get(table) or self._load_columns(table)
        width = len(columns)
        for row in rows:
            if len(row) != width:
                self._refuse(table, f"a row has {len(row)} values; the table has {width} columns")
            for column, value in zip(columns, row):  # noqa: B905 - the lengths were compared
                cls = value.__class__
                if cls is column.plain or (value is None and column.nullable):
                    continue  # the common case, in two comparisons
                why = column.problem(value)
                if why is not None:
                    self._refuse(table, f"column {column.name!r} {why}")

    def _refuse(self, table: str, why: str) -> None:
        group: Group | None = getattr(self._local, "group", None)
        if group is not None:
            group.refused = True
        raise UsageError(f"cannot record a row of {table}: {why}",
                         "send a value of the documented type for that field; if rf sent it, report it "
                         "with the command or request that failed")

    def _load_columns(self, table: str) -> tuple[_Column, ...]:
        with self._columns_lock:
            found = self._columns.get(table)
            if found is not None:
                return found
            cur = self._root.cursor()
            try:
                rows = cur.execute(
                    "SELECT column_name, data_type, is_nullable FROM duckdb_columns() WHERE database_name ="
                    " current_database() AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
                    [table]).fetchall()
            finally:
                cur.close()
            if not rows:
                raise ValueError(f"no table {table!r}")
            found = self._columns[table] = tuple(_Column(*r) for r in rows)
            return found

    def flush(self, timeout: float | None = 30.0) -> None:
        """Block until every row queued before this call is committed (or, for a group that
        failed, dropped: see :meth:`wait`). It reports no failure of anybody's rows."""
        if self._closed:
            return
        barrier = _Barrier()
        self._queue.put(barrier)
        self._hurry.set()
        barrier.event.wait(timeout)

    def wait(self, group: Group | None, timeout: float | None = 30.0) -> None:
        """Block until *group* (from :meth:`end_group`) is committed; StoreError if its
        transaction failed and it was dropped."""
        self.flush(timeout)
        if group is not None and group.error is not None:
            raise StoreError(f"these rows were not recorded: {_describe(group.error)}",
                             "nothing of them was kept; the cause is in the server's log "
                             "(rf.store.writer); report it with the command or request that failed")

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
            items: list[dict[str, list[tuple[Any, ...]]]] = []  # the groups and puts, for a retry apart
            barriers: list[_Barrier] = []
            stop = False
            count = 0
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Barrier):
                    barriers.append(item)
                else:
                    self._slots.release()  # taken off the queue: room for one more
                    items.append(item)
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
                self._apply(batch, items)
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

    def _commit(self, batch: dict[str, list[tuple[Any, ...]]]) -> None:
        """Write rows of every table and commit them in one transaction, deletes last; on any
        failure roll back (nothing of it stays) and raise."""
        deletes = [key for key in batch if key.startswith(_DELETE)]
        if deletes:
            batch = {**{k: v for k, v in batch.items() if not k.startswith(_DELETE)},
                     **{k: batch[k] for k in deletes}}
        try:
            self._con.execute("BEGIN TRANSACTION")
            for table, rows in batch.items():
                if table.startswith(_DELETE):
                    self._delete(table, rows)
                else:
                    self._insert(table, rows)
            self._con.execute("COMMIT")
        except BaseException:
            self._drop_appenders()
            try:
                self._con.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - no transaction left to roll back
                pass
            raise

    def _apply(self, batch: dict[str, list[tuple[Any, ...]]], items: list[dict[str, list[tuple[Any, ...]]]]) -> None:
        """Commit a batch in one transaction (one commit per batch, not per table). If it
        fails, retry its groups apart so that only the failing ones are dropped."""
        with self._lock:
            try:
                self._commit(batch)
                return
            except Exception as exc:  # noqa: BLE001 - retried apart below
                first = exc
            self.retried_batches += 1
            log.warning("a batch of %d groups could not be committed (%s); committing them apart",
                        len(items), _describe(first))
            failed: list[tuple[dict[str, list[tuple[Any, ...]]], BaseException]] = []
            if len(items) == 1 or _hopeless(first):
                failed = [(item, first) for item in items]
            else:
                middle = len(items) // 2
                self._commit_apart(items[:middle], failed)
                self._commit_apart(items[middle:], failed)
            for number, (item, error) in enumerate(failed):
                self._drop(item, error, logged=number < _LOG_FAILURES)
            if len(failed) > _LOG_FAILURES:
                log.error("%d more groups were not recorded (%s)", len(failed) - _LOG_FAILURES, _describe(failed[-1][1]))

    def _commit_apart(self, items: list[dict[str, list[tuple[Any, ...]]]],
                      failed: list[tuple[dict[str, list[tuple[Any, ...]]], BaseException]]) -> None:
        """Commit *items* (in queue order) in one transaction, or, if that fails, each half
        apart, down to the single group that fails alone (added to *failed*). Halves keep
        the queue's order, so a row is inserted before a later group deletes it."""
        try:
            self._commit(_merge(items))
            return
        except Exception as exc:  # noqa: BLE001 - split below
            if len(items) == 1 or _hopeless(exc):
                failed.extend((item, exc) for item in items)
                return
        middle = len(items) // 2
        self._commit_apart(items[:middle], failed)
        self._commit_apart(items[middle:], failed)

    def _drop(self, item: dict[str, list[tuple[Any, ...]]], exc: BaseException, *, logged: bool) -> None:
        """Account for a group whose transaction failed: counted, logged (its execution's id
        and tables, never row contents), its error kept for wait(); its deletes applied."""
        rows = sum(len(v) for k, v in item.items() if not k.startswith(_DELETE))
        self.failed_groups += 1
        self.failed_rows += rows
        if isinstance(item, Group):
            item.error = exc
        if logged:
            executions = [r[0] for r in item.get("executions", ())]
            what = (f"execution {', '.join(map(str, executions))}" if executions
                    else f"{'a group' if isinstance(item, Group) else 'a row set'}")
            tables = ", ".join(f"{len(v)} {k}" for k, v in item.items() if not k.startswith(_DELETE))
            log.error("%s was not recorded (%s rows, all dropped together): %s", what, tables, _describe(exc))
        deletes = {k: v for k, v in item.items() if k.startswith(_DELETE)}
        if deletes:  # e.g. the execution's running marker: gone with it all the same
            try:
                self._commit(deletes)
            except Exception as err:  # noqa: BLE001 - logged; nobody to report it to
                log.error("could not apply the deletes of a dropped group: %s", _describe(err))


def _merge(items: list[dict[str, list[tuple[Any, ...]]]]) -> dict[str, list[tuple[Any, ...]]]:
    batch: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for item in items:
        for table, rows in item.items():
            batch[table].extend(rows)
    return batch


def _hopeless(exc: BaseException) -> bool:
    """An error no split can help (the database file failed, or was invalidated)."""
    import duckdb

    return isinstance(exc, duckdb.IOException | duckdb.FatalException)


def _describe(exc: BaseException) -> str:
    """An error's first line without the values it quotes (a refused value may be a secret)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return _QUOTED.sub("'…'", text)[:300]
