"""Opening the DuckDB file, migrations, cursors, transactions, error translation."""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from rf.errors import RfError, StoreError
from rf.store.domains import StoreDomains
from rf.store.migrations import MIGRATIONS, SCHEMA_VERSION
from rf.store.writer import BatchWriter

if TYPE_CHECKING:
    from rf.models import Replica
    from rf.store.interfaces import (
        Repositories,
    )

BUSY_HINT = (
    "wait for the other rf command to finish, or start `rf serve` (or `rf ui`) "
    "so every command shares one server"
)


def translate_error(exc: BaseException) -> RfError | None:
    """Turn a DuckDB exception into an RfError (None if it is not DuckDB's)."""
    if isinstance(exc, RfError):
        return exc
    if not isinstance(exc, duckdb.Error):
        return None
    text = str(exc)
    if "Could not set lock" in text or "Conflicting lock" in text:
        pid = re.search(r"PID (\d+)", text)
        who = f" (pid {pid.group(1)})" if pid else ""
        return StoreError(f"the workspace database is in use by another process{who}", BUSY_HINT)
    if isinstance(exc, duckdb.TransactionException) or "Conflict" in text:
        return StoreError("a concurrent change got in the way; nothing was changed", "run the command again")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return StoreError(f"database error: {first}", "if this persists, report it with the command you ran")


def _being_created(path: Path) -> bool:
    """Whether ``path`` looks like a store another process is creating (small and new), or
    is gone since DuckDB refused it (it moved under us: the next attempt sees what is there)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return stat.st_size < 1024 * 1024 and time.time() - stat.st_mtime < 30


def _owner_only(db_path: Path) -> None:
    """No group or other permission bits on the store: the DuckDB file and its WAL and, in a
    workspace's ``.rf/``, the directory and what it directly holds (server.json, caches, logs,
    DuckDB's temporary files). Fixes workspaces made before this rule (or under a lax umask)."""
    state = db_path.parent
    paths = [db_path, db_path.with_name(db_path.name + ".wal")]
    if state.name == ".rf":
        paths.append(state)
        with contextlib.suppress(OSError), os.scandir(state) as entries:
            paths += [Path(e.path) for e in entries]
    for path in paths:
        with contextlib.suppress(OSError):
            mode = path.lstat().st_mode
            if mode & 0o077 and not stat.S_ISLNK(mode):
                os.chmod(path, stat.S_IMODE(mode) & 0o700)


class Store(StoreDomains):
    """One open DuckDB file. Thread-safe: cursors are per thread."""

    kind = "duckdb"
    #: several servers may share this store (replicas: PostgreSQL only; one process owns a DuckDB file)
    shared = False

    def announce_change(self) -> list[str]:
        """Tell the other servers on this store to drop their cached heads and routing: none on
        DuckDB (one process owns the file). Replicas that did not confirm (rf.store.pg_replicas)."""
        return []

    def live_replicas(self) -> list[Replica]:
        """The servers sharing this store (rf.store.pg.PgStore.live_replicas): none on DuckDB."""
        return []

    def after_unlock(self, callback: Callable[[], object]) -> None:
        """Run *callback* once this thread holds no ``write_lock`` (rf.store.pg.PgStore.after_unlock).
        On DuckDB at once: nothing it does waits for another process."""
        callback()

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path | None) -> None:
        self.path = path
        self._con = con
        self._local = threading.local()
        self.write_lock = threading.RLock()
        self._closed = False
        self._migrate()
        self.writer = BatchWriter(con)

    # ------------------------------------------------------------ opening
    @classmethod
    def open(cls, path: Path | str | None, *, wait_s: float = 3.0) -> Store:
        """Open (creating if needed) the store, retrying while another process holds the lock."""
        if path is None:
            return cls(duckdb.connect(":memory:"), None)
        path = Path(path)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _owner_only(path)  # before DuckDB creates its WAL there
        deadline = time.monotonic() + wait_s
        delay = 0.05
        while True:
            try:
                con = duckdb.connect(str(path))
                break
            except duckdb.Error as exc:
                err = translate_error(exc)
                locked = err is not None and "in use by another process" in err.message
                # Another rf command may be creating the file right now: its header is not
                # written yet (a store being created is a few KiB; a real one is larger).
                creating = _being_created(path) and "not a valid DuckDB database" in str(exc)
                if (locked or creating) and time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(delay * 1.5, 0.3)
                    continue
                if locked and err is not None:
                    raise err from None
                raise StoreError(
                    f"cannot open {path}: {str(exc).strip().splitlines()[0]}",
                    "check that the file is an rf database and that you may write to it",
                ) from None
        try:
            store = cls(con, path)
        except BaseException:
            con.close()
            raise
        _owner_only(path)
        return store

    def _migrate(self) -> None:
        con = self._con
        con.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"this workspace's database was written by a newer rf (schema v{current}; this rf knows v{SCHEMA_VERSION})",
                "upgrade rf (pip install -U rf) to use this workspace",
            )
        if current == SCHEMA_VERSION:
            return
        con.execute("BEGIN TRANSACTION")
        try:
            for version in range(current, SCHEMA_VERSION):
                # Statements run as written: a table that is already there (a step applied twice,
                # or a file whose schema drifted from its recorded version) fails the upgrade.
                for statement in MIGRATIONS[version]:
                    try:
                        con.execute(statement)
                    except duckdb.Error as exc:
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise StoreError(
                            f"cannot upgrade the workspace database from schema v{current} to v{SCHEMA_VERSION}:"
                            f" step v{version + 1} failed: {first}",
                            "nothing was changed; its tables do not match the schema it records (v"
                            f"{current}): restore the file from a backup, or report this message",
                        ) from None
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)]
            )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    @property
    def schema_version(self) -> int:
        row = self.cursor().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------ access
    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shared across threads)."""
        cur = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._con.cursor()
            self._local.cursor = cur
        return cur

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.cursor().execute(sql, params).fetchall()

    def query_one(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self.cursor().execute(sql, params).fetchone()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run writes atomically. Writers are serialized by ``write_lock``. Inside the store
        only: services use :meth:`unit_of_work`, which yields repositories, not a cursor."""
        with self.write_lock:
            cur = self.cursor()
            cur.execute("BEGIN TRANSACTION")
            self._local.in_transaction = True
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            finally:
                self._local.in_transaction = False
            cur.execute("COMMIT")

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor inside its open transaction. The repositories' writes use it:
        a write outside a unit of work would commit on its own, unserialized (a bug)."""
        if not getattr(self._local, "in_transaction", False):
            raise RuntimeError("a store write outside a unit of work: wrap it in `with store.unit_of_work():`")
        return self.cursor()

    @contextlib.contextmanager
    def unit_of_work(self) -> Iterator[Repositories]:
        """Several repository writes as one atomic change (rolled back if the block raises).

        Yields the repositories: every call made on this thread until the block ends runs in
        the transaction (DuckDB: this thread's cursor is the transaction's)."""
        with self.transaction():
            yield self

    def flush(self) -> None:
        """Make every queued high-volume row visible to reads."""
        self.writer.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.writer.close()
        with contextlib.suppress(Exception):
            self._con.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
