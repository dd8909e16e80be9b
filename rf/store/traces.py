"""SQL for trace spans (written through the batching writer).

The ``spans`` table has no index: appends must stay cheap. Reads are made
fast by bounding them in time. Spans arrive roughly in time order, so each
DuckDB row group covers a narrow range of ``start_ns`` and its min/max
statistics let a query such as "the spans of execution X, which started
between t0 and t1" skip nearly every row group of a large table. An
execution's id encodes its start time (:mod:`rf.ids`), which is where t0
comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter

SPAN_COLUMNS = (
    "env, trace_id, span_id, parent_id, execution_id, agent, kind, name, start_ns, end_ns, status, error, attributes"
)

#: A span row in table column order.
SpanRow = tuple[str, str, str, "str | None", str, str, str, str, int, int, str, "str | None", str]


class TracesMixin:
    """Mixed into :class:`rf.store.Store`."""

    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def flush(self) -> None:  # provided by Store
        raise NotImplementedError

    def queue_spans(self, rows: Sequence[SpanRow]) -> None:
        """Queue spans; the caller never waits for the disk."""
        put = self.writer.put
        for row in rows:
            put("spans", row)

    def root_span(self, execution_id: str, lo_ns: int, hi_ns: int) -> SpanRow | None:
        """The root span of an execution whose root started within [lo_ns, hi_ns]."""
        self.flush()
        row = self.cursor().execute(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE execution_id = ? AND parent_id IS NULL"
            " AND start_ns BETWEEN ? AND ? LIMIT 1",
            [execution_id, lo_ns, hi_ns],
        ).fetchone()
        return row  # type: ignore[return-value]

    def execution_spans(self, execution_id: str, lo_ns: int, hi_ns: int) -> list[SpanRow]:
        """Every span of an execution that started within [lo_ns, hi_ns], by start time."""
        self.flush()
        rows = self.cursor().execute(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE execution_id = ? AND start_ns BETWEEN ? AND ?"
            " ORDER BY start_ns, end_ns DESC",
            [execution_id, lo_ns, hi_ns],
        ).fetchall()
        return rows  # type: ignore[return-value]

    def root_spans(
        self, env: str, *, agent: str | None = None, since_ns: int | None = None, until_ns: int | None = None,
        limit: int = 50,
    ) -> list[SpanRow]:
        """Root spans (one per execution) of an environment, newest first."""
        self.flush()
        where = ["env = ?", "parent_id IS NULL"]
        params: list[Any] = [env]
        if agent is not None:
            where.append("agent = ?")
            params.append(agent)
        if since_ns is not None:
            where.append("start_ns >= ?")
            params.append(since_ns)
        if until_ns is not None:
            where.append("start_ns < ?")
            params.append(until_ns)
        params.append(limit)
        rows = self.cursor().execute(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE {' AND '.join(where)} ORDER BY start_ns DESC LIMIT ?", params
        ).fetchall()
        return rows  # type: ignore[return-value]

    def spans_of(
        self, env: str, *, agent: str | None = None, since_ns: int | None = None, limit: int = 100_000
    ) -> list[SpanRow]:
        """Spans of an environment (for export), oldest first."""
        self.flush()
        where = ["env = ?"]
        params: list[Any] = [env]
        if agent is not None:
            where.append("agent = ?")
            params.append(agent)
        if since_ns is not None:
            where.append("start_ns >= ?")
            params.append(since_ns)
        params.append(limit)
        rows = self.cursor().execute(
            f"SELECT {SPAN_COLUMNS} FROM spans WHERE {' AND '.join(where)} ORDER BY start_ns, end_ns DESC LIMIT ?",
            params,
        ).fetchall()
        return rows  # type: ignore[return-value]
