"""The store: the only package that imports duckdb.

``Store`` owns one DuckDB file (``.rf/rf.duckdb``). Reads use per-thread
cursors; rare writes (deploys, releases) run in transactions serialized by one
lock; high-volume rows (executions, later spans) go through
:class:`~rf.store.writer.BatchWriter`, one thread that batches them with
DuckDB's Appender.
"""

from rf.store.db import Store, translate_error

__all__ = ["Store", "translate_error"]
