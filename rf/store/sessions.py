"""SQL for sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter


class SessionsMixin:
    """Mixed into :class:`rf.store.Store`."""

    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError
