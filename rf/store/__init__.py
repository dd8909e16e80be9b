"""The store: the only package that imports duckdb.

``Store`` owns one DuckDB file (``.rf/rf.duckdb``). Reads use per-thread
cursors; rare writes (deploys, releases) run in transactions serialized by one
lock; high-volume rows (executions, spans, session messages, memory writes)
go through :class:`~rf.store.writer.BatchWriter`, one thread that inserts
them in batches, parsed from JSON inside DuckDB without the GIL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rf.store.db import Store
from rf.store.db import translate_error as _translate_duckdb

if TYPE_CHECKING:
    from rf.config import Workspace
    from rf.errors import RfError


def open_store(ws: Workspace, *, wait_s: float = 3.0) -> Store:
    """The workspace's store: PostgreSQL when ``[store] url`` (or ``RF_STORE_URL``) is set
    (rf.store.pg.PgStore, same API), else the DuckDB file ``.rf/rf.duckdb``."""
    if ws.store_url:
        from rf.store.pg import PgStore

        return PgStore.open(ws.store_url, password_env=ws.store_password_env,  # type: ignore[return-value]
                            max_connections=ws.store_max_connections)
    return Store.open(ws.db_path, wait_s=wait_s)


def translate_error(exc: BaseException) -> RfError | None:
    """A store exception (DuckDB's or psycopg's) as an RfError; None if it is neither."""
    found = _translate_duckdb(exc)
    if found is None and "psycopg" in __import__("sys").modules:
        from rf.store.pg import translate_pg_error

        found = translate_pg_error(exc)
    return found


def describe_store(store: Any) -> str:
    """What ``rf status`` shows of the store: its kind and where it is (never a password)."""
    describe = getattr(store, "describe", None)
    if describe is not None:
        return str(describe())
    return f"duckdb {store.path}" if store.path is not None else "duckdb (in memory)"


__all__ = ["Store", "describe_store", "open_store", "translate_error"]
