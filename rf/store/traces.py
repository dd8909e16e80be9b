"""SQL for trace spans (written through the batching writer).

An execution's spans live in two places, each written once when it ends:
its root span in its own ``executions`` row (``root_span``, JSON) and its
child spans in one ``span_batches`` row (JSON). Neither table has an index:
appends must stay cheap. Reads are made fast by bounding them in time. Rows
arrive roughly in time order, so each DuckDB row group covers a narrow range
of ``start_ns`` / ``started_at`` and its min/max statistics let a query such
as "the spans of execution X, which started between t0 and t1" skip nearly
every row group of a large table. An execution's id encodes its start time
(:mod:`rf.ids`), which is where t0 comes from. (Stores written by older rf
kept one row per span in a ``spans`` table: opening one moves those rows here
once: "One storage format" in :mod:`rf.store.migrations`.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rf.ids import datetime_of_ns
from rf.jsonfast import dumps_lenient as _encode
from rf.jsonfast import loads

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter

#: A span as the readers return it: ``(env, trace_id, span_id, parent_id, execution_id, agent,
#: kind, name, start_ns, end_ns, status, error, attributes JSON)``.
SpanRow = tuple[str, str, str, "str | None", str, str, str, str, int, int, str, "str | None", str]


class TracesMixin:
    """Mixed into :class:`rf.store.Store`."""

    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def flush(self) -> None:  # provided by Store
        raise NotImplementedError

    def queue_span_batch(self, env: str, trace_id: str, execution_id: str, agent: str, start_ns: int,
                         end_ns: int, count: int, spans_json: str) -> None:
        """Queue an execution's child spans as one row (``spans_json``: see :data:`BATCH_FIELDS`);
        UsageError, not queued, if the table cannot hold it."""
        row = (env, trace_id, execution_id, agent, start_ns, end_ns, count, spans_json)
        self.writer.check("span_batches", (row,))
        self.writer.put("span_batches", row)

    def root_span(self, execution_id: str, lo_ns: int, hi_ns: int) -> SpanRow | None:
        """The root span of an execution whose root started within [lo_ns, hi_ns]."""
        self.flush()
        return _root_of(self.cursor(), execution_id, lo_ns, hi_ns)

    def execution_spans(self, execution_id: str, lo_ns: int, hi_ns: int) -> list[SpanRow]:
        """Every span of an execution that started within [lo_ns, hi_ns], by start time."""
        self.flush()
        cur = self.cursor()
        rows: list[SpanRow] = []
        batches = cur.execute(
            "SELECT env, trace_id, execution_id, agent, spans FROM span_batches"
            " WHERE execution_id = ? AND start_ns BETWEEN ? AND ?",
            [execution_id, lo_ns, hi_ns],
        ).fetchall()
        for batch in batches:
            rows.extend(_expand(batch))
        root = _root_of(cur, execution_id, lo_ns, hi_ns)
        if root is not None:
            rows.append(root)
        rows.sort(key=_time_order)
        return rows

    def root_spans(
        self, env: str, *, agent: str | None = None, since_ns: int | None = None, until_ns: int | None = None,
        limit: int = 50, release_id: str | None = None, arm: str | None = None,
    ) -> list[SpanRow]:
        """Root spans (one per execution) of an environment, newest first (``release_id``, ``arm``:
        of production's executions of that release / canary arm only)."""
        self.flush()
        where: list[str] = ["env = ?", "root_span IS NOT NULL"]
        params: list[Any] = [env]
        for column, value in (("agent", agent), ("release_id", release_id), ("arm", arm)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if since_ns is not None:
            where.append("started_at >= ?")
            params.append(datetime_of_ns(since_ns))
        if until_ns is not None:
            where.append("started_at < ?")
            params.append(datetime_of_ns(until_ns))
        found = [_root_row(r) for r in self.cursor().execute(
            f"SELECT {_ROOT_COLUMNS} FROM executions WHERE {' AND '.join(where)}"
            " ORDER BY started_at DESC LIMIT ?", [*params, limit]).fetchall()]
        found.sort(key=_time_order)
        return found[::-1][:limit]

    def spans_of(
        self, env: str, *, agent: str | None = None, since_ns: int | None = None, limit: int = 100_000
    ) -> list[SpanRow]:
        """Spans of an environment (for export), oldest first."""
        self.flush()
        cur = self.cursor()
        where, params = "env = ?", [env]
        if agent is not None:
            where += " AND agent = ?"
            params.append(agent)

        def since(column: str, value: Any) -> tuple[str, list[Any]]:
            return ((f" AND {column} >= ?", [value]) if since_ns is not None else ("", []))

        rows: list[SpanRow] = []
        # A batch holds at least one span, so `limit` batches (by their first span) hold
        # at least the first `limit` child spans.
        extra, extra_params = since("end_ns", since_ns)
        for batch in cur.execute(
            f"SELECT env, trace_id, execution_id, agent, spans FROM span_batches WHERE {where}{extra}"
            " ORDER BY start_ns LIMIT ?",
            [*params, *extra_params, limit],
        ).fetchall():
            rows.extend(r for r in _expand(batch) if since_ns is None or r[8] >= since_ns)
        extra, extra_params = since("started_at", datetime_of_ns(since_ns) if since_ns is not None else None)
        rows += [_root_row(r) for r in cur.execute(
            f"SELECT {_ROOT_COLUMNS} FROM executions WHERE {where}{extra} AND root_span IS NOT NULL"
            " ORDER BY started_at LIMIT ?",
            [*params, *extra_params, limit],
        ).fetchall()]
        rows.sort(key=_time_order)
        return rows[:limit]


#: The fields of each span in a ``span_batches.spans`` JSON array, in order.
BATCH_FIELDS = ("span_id", "parent_id", "kind", "name", "start_ns", "end_ns", "status", "error", "attributes")


def _expand(batch: tuple[Any, ...]) -> list[SpanRow]:
    """A ``span_batches`` row as span rows (attributes as JSON text)."""
    env, trace_id, execution_id, agent, text = batch
    return [
        (env, trace_id, s[0], s[1], execution_id, agent, s[2], s[3], s[4], s[5], s[6], s[7], _encode(s[8]))
        for s in loads(text)
    ]


_ROOT_COLUMNS = "env, agent, id, root_span"


def _root_of(cur: duckdb.DuckDBPyConnection, execution_id: str, lo_ns: int, hi_ns: int) -> SpanRow | None:
    """The root span kept in an execution's own row, if it started within [lo_ns, hi_ns]."""
    found = cur.execute(
        f"SELECT {_ROOT_COLUMNS} FROM executions WHERE id = ? AND root_span IS NOT NULL"
        " AND started_at BETWEEN ? AND ? LIMIT 1",
        [execution_id, datetime_of_ns(lo_ns), datetime_of_ns(hi_ns)],
    ).fetchone()
    return _root_row(found) if found is not None else None


def _root_row(row: tuple[Any, ...]) -> SpanRow:
    """An execution's ``root_span`` (JSON ``[trace_id, span_id, start_ns, end_ns, status, error,
    attributes]``) as a span row: kind ``agent``, named after the agent."""
    env, agent, execution_id, text = row
    t = loads(text)
    return (env, t[0], t[1], None, execution_id, agent, "agent", agent, t[2], t[3], t[4], t[5], _encode(t[6]))


def _time_order(row: SpanRow) -> tuple[int, int]:
    return (int(row[8]), -int(row[9]))
