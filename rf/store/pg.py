"""The PostgreSQL store: the same public API as :class:`rf.store.Store`, over psycopg 3.

Chosen by ``[store] url = "postgresql://USER@HOST:PORT/DB"`` in rf.toml (or ``RF_STORE_URL``);
DuckDB stays the default. The password is never in rf.toml: libpq reads ``PGPASSWORD`` (or
``~/.pgpass``), or ``[store] password_env = "NAME"`` names the environment variable that holds
it (see rf.config.store_settings). A url that carries a password still works, but nothing rf
prints shows it (:func:`shown_url`).

- **Connections.** A bounded pool (rf.store.pg_pool, ``[store] max_connections``): each
  statement leases a connection (autocommit) for as long as it runs; a transaction and
  ``write_lock`` pin one to their thread until they end. Threads own none, so a server's
  hundreds of threads need only as many connections as statements run at once.
  :meth:`PgStore.close` closes them all. Writes in :meth:`PgStore.transaction` are serialized
  across every process on the database by ``write_lock`` (rf.store.pg_replicas).
- **SQL.** The mixins' DuckDB SQL runs through one translation (rf.store.pg_sql.translate:
  placeholders, upserts, a few fragments), done in :class:`PgCursor`; the methods whose SQL
  has no translation are rewritten in rf.store.pg_overrides.PgOverrides, first in the bases.
- **Writer.** High-volume rows go through rf.store.pg_writer.PgBatchWriter (COPY), with the
  semantics of rf.store.writer.BatchWriter.
- **Errors.** psycopg errors become StoreError (:func:`translate_pg_error`): unreachable
  server, refused password, missing database, schema newer than this rf.
- **Vectors.** pgvector's ``vector`` type when ``CREATE EXTENSION vector`` works, otherwise
  float4 arrays in ``bytea`` with the cosine computed by numpy over the live candidates
  (:attr:`PgStore.vector_mode`, shown by ``rf status``).
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from rf.config import shown_store_url as shown_url
from rf.errors import RfError, StoreError
from rf.ids import iso
from rf.models import Replica
from rf.store.domains import StoreDomains
from rf.store.migrations import SCHEMA_VERSION
from rf.store.pg_overrides import PgOverrides
from rf.store.pg_pool import (
    DEDICATED_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_WAIT_S,
    MIN_MAX_CONNECTIONS,
    ConnectionPool,
)
from rf.store.pg_replicas import LAPSE_S, ClusterWriteLock, ReplicaLink, announce
from rf.store.pg_sql import PG_FUNCTIONS, PG_INDEXES, pg_statements, translate

if TYPE_CHECKING:
    from rf.store.interfaces import (
        Repositories,
    )

#: An advisory lock key held while migrating (two processes opening a fresh database at once).
_MIGRATE_LOCK = 0x7266_6D69  # "rfmi"
_CONNECT_TIMEOUT_S = 10


# ---------------------------------------------------------------- errors
def translate_pg_error(exc: BaseException, url: str = "") -> RfError | None:
    """A psycopg exception as a StoreError (None if it is not psycopg's)."""
    if isinstance(exc, RfError):
        return exc
    try:
        import psycopg
    except ImportError:  # pragma: no cover - only called once psycopg is in use
        return None
    if not isinstance(exc, psycopg.Error):
        return None
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    where = f" at {shown_url(url)}" if url else ""
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.OperationalError) and not state:
        lowered = text.lower()
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            return StoreError(f"the PostgreSQL server{where} refused the password: {first}",
                              "set PGPASSWORD (or [store] password_env in rf.toml) to the role's password")
        if "too many clients" in lowered or "remaining connection slots are reserved" in lowered:
            return StoreError(f"the PostgreSQL server{where} has no connection left for rf: {first}",
                              "lower [store] max_connections of the rf processes on it (each opens at most that"
                              " many), or raise the server's max_connections")
        if "does not exist" in lowered and "database" in lowered:
            return StoreError(f"the PostgreSQL database{where} does not exist: {first}",
                              "create it (createdb NAME, or CREATE DATABASE NAME) and run the command again")
        return StoreError(f"cannot reach the PostgreSQL store{where}: {first}",
                          "check that the server runs and that [store] url (or RF_STORE_URL) names it")
    if state == "57014":  # QueryCanceled (an OperationalError, but the connection is fine)
        return StoreError(f"the PostgreSQL server{where} cancelled the statement: {first}",
                          "run the command again; if it keeps happening, check the server's statement_timeout")
    if state in ("40001", "40P01"):
        return StoreError("a concurrent change got in the way; nothing was changed", "run the command again")
    if state.startswith("08") or isinstance(exc, psycopg.OperationalError):
        return StoreError(f"the connection to the PostgreSQL store{where} failed: {first}",
                          "check that the server runs, then run the command again")
    return StoreError(f"database error: {first}", "if this persists, report it with the command you ran")


def _connect(url: str, password_env: str | None, role: str = "rf") -> Any:
    """A new connection (autocommit, UTC), named *role* in ``pg_stat_activity.application_name``
    unless the url names one."""
    import psycopg
    from psycopg.adapt import Loader
    from psycopg.conninfo import conninfo_to_dict
    from psycopg.types.string import StrDumper

    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT_S}
    try:
        named = "application_name" in conninfo_to_dict(url)
    except psycopg.Error:
        named = True  # psycopg.connect reports the bad url
    if not named:
        kwargs["application_name"] = role
    if password_env:
        password = os.environ.get(password_env)
        if password is None:
            raise StoreError(f"[store] password_env names {password_env}, which is not set",
                             f"export {password_env}=... (the PostgreSQL role's password) and run the command again")
        kwargs["password"] = password
    try:
        con = psycopg.connect(url, **kwargs)
    except psycopg.Error as exc:
        raise translate_pg_error(exc, url) or exc from None
    # DuckDB's sum() of integers is an integer; PostgreSQL's is numeric. Read numeric as int (or float).
    class _Numeric(Loader):
        def load(self, data: Any) -> Any:
            value = Decimal(bytes(data).decode())
            return int(value) if value == value.to_integral_value() else float(value)

    con.adapters.register_loader("numeric", _Numeric)
    # Python text as `text`, not psycopg's default "unknown": DuckDB's `unnest(?)` of a list and
    # `? || ':'` need a type to resolve.
    con.adapters.register_dumper(str, StrDumper)
    con.execute("SET TimeZone = 'UTC'")
    return con


# ---------------------------------------------------------------- cursor
#: Statements run again once when their pooled connection turned out dead (they change nothing).
_READ = re.compile(r"\s*SELECT\b", re.I)


class PgCursor:
    """DuckDB SQL (translated once per text) run on PostgreSQL, raising StoreError.

    Each :meth:`execute` runs on the thread's pinned connection (inside a transaction or
    ``write_lock``) or on one leased from the pool for that statement alone: the whole result
    is read before the connection goes back, and the fetch methods read that copy."""

    __slots__ = ("_description", "_pos", "_rowcount", "_rows", "_store")

    def __init__(self, store: PgStore) -> None:
        self._store = store
        self._rows: list[tuple[Any, ...]] | None = None
        self._pos = 0
        self._description: Any = None
        self._rowcount = -1

    def _run(self, sql: str, params: Any, many: bool) -> PgCursor:
        store = self._store
        pinned = store._pinned()
        if pinned is not None:
            return self._on(pinned, sql, params, many)
        for attempt in (1, 2):
            con = store._pool.get()
            broken = False
            try:
                return self._on(con, sql, params, many)
            except StoreError:
                broken = bool(con.broken)
                if attempt == 2 or not (broken and not many and _READ.match(sql)):
                    raise
            finally:
                store._pool.put(con, discard=broken)
            # A pooled connection found dead (the server restarted, a failover, an idle timeout): so
            # are the others made before it. A read is run again, once, on a new one.
            store._pool.drop_idle()
        raise AssertionError("unreachable")  # pragma: no cover

    def _on(self, con: Any, sql: str, params: Any, many: bool) -> PgCursor:
        try:
            with con.cursor() as cur:
                if many:
                    cur.executemany(translate(sql), params)
                else:
                    cur.execute(translate(sql), params if params is not None else ())
                self._description = cur.description
                self._rows = cur.fetchall() if cur.description is not None else None
                self._rowcount = int(cur.rowcount)
                self._pos = 0
        except Exception as exc:
            err = translate_pg_error(exc, self._store.url)
            if err is None:
                raise
            raise err from exc
        return self

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> PgCursor:
        return self._run(sql, params, False)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> PgCursor:
        return self._run(sql, rows, True)

    def _result(self) -> list[tuple[Any, ...]]:
        if self._rows is None:
            raise StoreError("the last statement returned no rows to fetch",
                             "this is a bug in rf: report it with the command you ran")
        return self._rows

    def fetchone(self) -> tuple[Any, ...] | None:
        rows = self._result()
        if self._pos >= len(rows):
            return None
        self._pos += 1
        return rows[self._pos - 1]

    def fetchall(self) -> list[tuple[Any, ...]]:
        rows = self._result()
        out, self._pos = rows[self._pos:] if self._pos else rows, len(rows)
        return out

    def fetchmany(self, size: int) -> list[tuple[Any, ...]]:
        rows = self._result()
        out = rows[self._pos:self._pos + size]
        self._pos += len(out)
        return out

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def connection(self) -> Any:
        """The thread's pinned psycopg connection (COPY inside a transaction: rf.store.pg_overrides)."""
        con = self._store._pinned()
        if con is None:
            raise RuntimeError("a COPY outside a transaction: wrap it in `with store.transaction():`")
        return con

    def close(self) -> None:
        self._rows = None


# ---------------------------------------------------------------- the store
class PgStore(PgOverrides, StoreDomains):
    """One PostgreSQL database. Thread-safe: statements lease pooled connections (rf.store.pg_pool)."""

    kind = "postgresql"
    #: several servers may share this store: replicas (rf.store.pg_replicas)
    shared = True
    #: markers of servers whose heartbeat is alive are theirs, not interrupted (rf.store.executions)
    _LIVE_OWNERS = (" AND owner NOT IN (SELECT id FROM replicas WHERE heartbeat_at > LOCALTIMESTAMP"
                    f" - INTERVAL '{LAPSE_S:g} seconds')")

    def __init__(self, url: str, password_env: str | None = None, *,
                 max_connections: int | None = None, pool_wait_s: float = DEFAULT_WAIT_S) -> None:
        from rf.store.pg_writer import PgBatchWriter

        self.url = url
        self.path = None  # no file (rf gc, data sources compare against it)
        self._password_env = password_env
        self.max_connections = DEFAULT_MAX_CONNECTIONS if max_connections is None else int(max_connections)
        if self.max_connections < MIN_MAX_CONNECTIONS:
            raise StoreError(f"[store] max_connections must be at least {MIN_MAX_CONNECTIONS}"
                             f" (not {self.max_connections})", "fix rf.toml")
        self._local = threading.local()
        self._pool = ConnectionPool(lambda: _connect(url, password_env), wait_s=pool_wait_s,
                                    size=self.max_connections - DEDICATED_CONNECTIONS,
                                    setting=f"[store] max_connections (now {self.max_connections})")
        self._dedicated: weakref.WeakSet[Any] = weakref.WeakSet()  # the replica listener's
        self._dedicated_lock = threading.Lock()
        # Writes are serialized across every server on this database (rf.store.pg_replicas).
        self.write_lock = ClusterWriteLock(self._pin, self._unpin, self._pool.drop_idle)
        self.replica: ReplicaLink | None = None
        self._closed = False
        try:
            with self._lease() as first:
                self._migrate(first)
                self.vector_mode = self._choose_vectors(first)
            self.writer = PgBatchWriter(lambda: _connect(url, password_env, "rf-writer"), columns=self._writer_columns)
        except BaseException:
            self._pool.close()
            raise

    @classmethod
    def open(cls, url: str, *, password_env: str | None = None, max_connections: int | None = None,
             pool_wait_s: float = DEFAULT_WAIT_S) -> PgStore:
        return cls(url, password_env, max_connections=max_connections, pool_wait_s=pool_wait_s)

    @property
    def shown_url(self) -> str:
        return shown_url(self.url)

    def describe(self) -> str:
        """``postgresql postgresql://rf@host/db (vectors: pgvector)`` for ``rf status``."""
        return f"postgresql {self.shown_url} (vectors: {self.vector_mode})"

    # ------------------------------------------------------------ connections
    def _pinned(self) -> Any:
        """The connection pinned to this thread (None: statements lease their own)."""
        return getattr(self._local, "pin", None)

    def _pin(self) -> Any:
        """Pin a connection to this thread until the matching :meth:`_unpin` (nested pins share it):
        a transaction, the write lock's session advisory lock, statements that must share a session."""
        con = getattr(self._local, "pin", None)
        if con is not None:
            self._local.pins += 1
            return con
        con = self._pool.get()
        self._local.pin, self._local.pins, self._local.discard = con, 1, False
        return con

    def _unpin(self, discard: bool = False) -> None:
        """End one pin; the outermost hands the connection back (closed if any level asked to
        *discard* it: a session lock that could not be released goes with its session)."""
        if discard:
            self._local.discard = True
        self._local.pins -= 1
        if self._local.pins == 0:
            con, self._local.pin = self._local.pin, None
            self._pool.put(con, discard=self._local.discard)

    @contextlib.contextmanager
    def _lease(self) -> Iterator[Any]:
        """A connection pinned to this thread for the block."""
        con = self._pin()
        try:
            yield con
        except BaseException:
            self._unpin(discard=bool(con.broken))
            raise
        self._unpin()

    def _new_connection(self) -> Any:
        """A connection of its own, outside the pool (closed with the store): LISTEN (rf.store.pg_replicas)."""
        con = _connect(self.url, self._password_env, "rf-listen")
        with self._dedicated_lock:
            self._dedicated.add(con)
        return con

    def pool_stats(self) -> dict[str, int]:
        """The pool's figures (``rf store info``): size, open, idle, busy, opened, waits."""
        return self._pool.stats()

    # ------------------------------------------------------------ replicas
    def start_replica(self, url: str, on_change: Callable[[], None]) -> ReplicaLink:
        """Join the servers on this database (``rf serve``): heartbeat, LISTEN, ``on_change`` called
        when another process changed heads or routing (rf.store.pg_replicas)."""
        link = ReplicaLink(self, url, on_change)
        link.start()
        self.replica = link
        return link

    def after_unlock(self, callback: Callable[[], object]) -> None:
        """Run *callback* once this thread holds no ``write_lock`` (at once if it holds none): the
        wait for the replicas' confirmations must not keep every server's writes waiting."""
        self.write_lock.after_release(callback)

    def announce_change(self) -> list[str]:
        """Tell every server on this database to drop its cached heads and routing; returns once
        each live one confirmed (warnings naming those that did not in time)."""
        try:
            with self._lease() as con:
                return announce(con, self.replica.id if self.replica is not None else None)
        except Exception as exc:
            err = translate_pg_error(exc, self.url)
            if err is None or err is exc:
                raise
            raise err from exc

    def live_replicas(self) -> list[Replica]:
        """The servers on this database whose heartbeat is alive, the oldest first (``rf status``)."""
        rows = self.cursor().execute(
            "SELECT id, url, host, pid, started_at, heartbeat_at,"
            " EXTRACT(EPOCH FROM (LOCALTIMESTAMP - heartbeat_at))::float8 FROM replicas"
            f" WHERE heartbeat_at > LOCALTIMESTAMP - INTERVAL '{LAPSE_S:g} seconds' ORDER BY started_at, id").fetchall()
        return [Replica(id=r[0], url=r[1], host=r[2], pid=int(r[3]), started_at=iso(r[4]), heartbeat_at=iso(r[5]),
                        heartbeat_age_s=round(max(float(r[6]), 0.0), 3)) for r in rows]

    def _markers_checked(self) -> bool:
        """Markers may be another server's: always read them (after recovering the dead ones)."""
        super()._markers_checked()
        return True

    def _migrate(self, con: Any) -> None:
        import psycopg

        cur = self.cursor()  # on *con*: pinned to this thread
        with con.transaction():
            cur.execute("SELECT pg_advisory_xact_lock(?)", [_MIGRATE_LOCK])
            cur.execute("CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            row = cur.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"the PostgreSQL store at {self.shown_url} was written by a newer rf (schema v{current}; this rf"
                    f" knows v{SCHEMA_VERSION})",
                    "upgrade rf (pip install -U rf) on this machine to use this database")
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in pg_statements(version):
                    try:
                        with con.transaction():  # a savepoint: the error names the step
                            con.execute(statement)
                    except psycopg.Error as exc:
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise StoreError(
                            f"cannot upgrade the PostgreSQL store at {self.shown_url} from schema v{current} to"
                            f" v{SCHEMA_VERSION}: step v{version} failed: {first}",
                            "nothing was changed; report this message") from None
            for statement in (*PG_FUNCTIONS, *PG_INDEXES):
                con.execute(statement)
            if current != SCHEMA_VERSION:
                cur.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                            [str(SCHEMA_VERSION)])

    def _choose_vectors(self, con: Any) -> str:
        """``pgvector`` when the extension is (or can be) installed in this database, else ``float4-bytea``."""
        import psycopg

        if os.environ.get("RF_STORE_VECTORS") == "portable":  # tests: the fallback on a server with pgvector
            return "float4-bytea"
        try:
            with con.transaction():
                con.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error:
            return "float4-bytea"
        return "pgvector"

    def _writer_columns(self, table: str) -> list[tuple[str, str, bool]]:
        rows = self.cursor().execute(
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position", [table]).fetchall()
        return [(r[0], r[1], bool(r[2])) for r in rows]

    @property
    def schema_version(self) -> int:
        row = self.cursor().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------ access
    def cursor(self) -> PgCursor:  # type: ignore[override]
        """A cursor: each statement runs on this thread's pinned connection, else on a pooled one."""
        if self._closed:
            raise StoreError("the store is closed", "this is a bug in rf: report it with the command you ran")
        return PgCursor(self)

    def query(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self.cursor().execute(sql, params).fetchall()

    def query_one(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        return self.cursor().execute(sql, params).fetchone()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[PgCursor]:  # type: ignore[override]
        """Run writes atomically. Writers of this process are serialized by ``write_lock``. Inside
        the store only: services use :meth:`unit_of_work`."""
        with self.write_lock, self._lease() as con:
            cur = self.cursor()
            self._local.in_transaction = True
            try:
                with con.transaction():
                    yield cur
            except Exception as exc:
                err = translate_pg_error(exc, self.url)
                if err is None or err is exc:
                    raise
                raise err from exc
            finally:
                self._local.in_transaction = False

    def _write_cursor(self) -> PgCursor:  # type: ignore[override]
        """This thread's cursor inside its open transaction (the repositories' writes use it)."""
        if not getattr(self._local, "in_transaction", False):
            raise RuntimeError("a store write outside a unit of work: wrap it in `with store.unit_of_work():`")
        return self.cursor()

    @contextlib.contextmanager
    def unit_of_work(self) -> Iterator[Repositories]:
        """Several repository writes as one transaction (rolled back if the block raises)."""
        with self.transaction():
            yield self

    def flush(self) -> None:
        """Make every queued high-volume row visible to reads."""
        self.writer.flush()

    def close(self) -> None:
        if self._closed:
            return
        if self.replica is not None:
            self.replica.stop()
            self.replica = None
        self._closed = True
        self.writer.close()
        self._pool.close()
        with self._dedicated_lock:
            dedicated = list(self._dedicated)
        for con in dedicated:
            with contextlib.suppress(Exception):
                con.close()

    def __enter__(self) -> PgStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
