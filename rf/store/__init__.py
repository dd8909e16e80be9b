"""The store: the only package that imports duckdb.

``Store`` owns one DuckDB file (``.rf/rf.duckdb``). Reads use per-thread
cursors; rare writes (deploys, releases) run in transactions serialized by one
lock; high-volume rows (executions, spans, session messages, memory writes)
go through :class:`~rf.store.writer.BatchWriter`, one thread that inserts
them in batches, parsed from JSON inside DuckDB without the GIL.
"""

from rf.store.db import Store, translate_error

__all__ = ["Store", "translate_error"]
