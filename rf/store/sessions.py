"""SQL for sessions (threads) and memory, per environment.

Both tables are append-only and written through the batching writer, so an
execution that appends to a session or writes memory never waits on a
synchronous INSERT:

- ``session_turns``: one row per execution (its input, what it appended,
  its output: a JSON array); a session is ``(env, agent, session_id)`` and
  ``seq`` orders its messages (older rf kept one row per message in
  ``session_messages``: opening such a store moves them here once, see "One
  storage format" in :mod:`rf.store.migrations`).
- ``memory``: one row per write; the row with the highest ``seq`` of
  ``(env, key)`` holds the value, a NULL value means "deleted".
  :meth:`SessionsMixin.compact_memory` removes superseded rows now and then,
  so reads stay proportional to the number of keys, not to the history.

Every read flushes the writer first (read-your-writes) and filters by
``env``: one environment's sessions and memory are never visible from the
other.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from rf.ids import datetime_of_micros
from rf.jsonfast import dumps as _dumps

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter

#: An execution's session messages in one row, in table column order.
TurnRow = tuple[str, str, str, int, int, "str | None", _dt.datetime, _dt.datetime, str]
#: A memory row, in table column order (value None = deleted).
MemoryRow = tuple[str, str, int, "str | None", "str | None", "str | None", _dt.datetime]


class SessionsMixin:
    """Mixed into :class:`rf.store.Store`."""

    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def flush(self) -> None:  # provided by Store
        raise NotImplementedError

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:  # provided by Store
        raise NotImplementedError
        yield  # pragma: no cover

    # ------------------------------------------------------------ sessions
    def queue_session_turn(self, row: TurnRow) -> None:
        """Queue one execution's messages (env, agent, session_id, seq, count, execution_id,
        started_at, ended_at, messages JSON); UsageError, not queued, if the table cannot hold it."""
        self.writer.check("session_turns", (row,))
        self.writer.put("session_turns", row)

    def session_messages(
        self, env: str, session_id: str, agent: str, *, limit: int | None = None
    ) -> list[tuple[int, str, Any, str | None, _dt.datetime]]:
        """``(seq, role, content, execution_id, created_at)``, oldest first (the newest ``limit``)."""
        if limit == 0:
            return []
        self.flush()
        where = "env = ? AND session_id = ? AND agent = ?"
        sql = f"SELECT seq, count, messages, execution_id FROM session_turns WHERE {where}"
        params: list[Any] = [env, session_id, agent]
        if limit is not None:
            # The newest rows that hold the newest `limit` messages.
            sql += " QUALIFY sum(count) OVER (ORDER BY seq DESC ROWS UNBOUNDED PRECEDING) - count < ?"
            params.append(limit)
        rows = self.cursor().execute(sql + " ORDER BY seq", params).fetchall()
        out: list[tuple[int, str, Any, str | None, _dt.datetime]] = []
        for seq, _count, messages, execution_id in rows:
            for i, (role, content, at_us) in enumerate(json.loads(messages)):
                out.append((seq + i, role, content, execution_id, datetime_of_micros(at_us)))
        return out[-limit:] if limit is not None else out

    def session_agents(self, env: str, session_id: str) -> list[str]:
        """The agents that have a session with this id in ``env``."""
        self.flush()
        rows = self.cursor().execute(
            "SELECT DISTINCT agent FROM session_turns WHERE env = ? AND session_id = ? ORDER BY agent",
            [env, session_id],
        ).fetchall()
        return [r[0] for r in rows]

    def list_sessions(
        self, env: str, *, agent: str | None = None, limit: int = 50, release_id: str | None = None,
        arm: str | None = None,
    ) -> list[tuple[str, str, int, _dt.datetime, _dt.datetime, str, str | None, str | None]]:
        """``(session_id, agent, messages, started_at, updated_at, last content JSON, release id,
        arm)``, newest first; the release and arm are those of the session's latest execution
        (production only: staging has neither), and filter the list when given."""
        self.flush()
        where = "env = ?"
        params: list[Any] = [env]
        if agent is not None:
            where += " AND agent = ?"
            params.append(agent)
        if env != "production":
            if release_id is not None or arm is not None:
                return []
            rows = self.cursor().execute(
                f"""SELECT session_id, agent, sum(count), min(started_at), max(ended_at), arg_max(messages, seq),
                           NULL, NULL
                    FROM session_turns WHERE {where}
                    GROUP BY session_id, agent ORDER BY max(seq + count - 1) DESC LIMIT ?""",
                [*params, limit],
            ).fetchall()
        else:
            outer, outer_params = [], []
            for column, value in (("release_id", release_id), ("arm", arm)):
                if value is not None:
                    outer.append(f"e.{column} = ?")
                    outer_params.append(value)
            rows = self.cursor().execute(
                f"""SELECT t.session_id, t.agent, t.n, t.first_at, t.last_at, t.last, e.release_id, e.arm
                    FROM (SELECT session_id, agent, sum(count) AS n, min(started_at) AS first_at,
                                 max(ended_at) AS last_at, arg_max(messages, seq) AS last,
                                 arg_max(execution_id, seq) AS last_execution, max(seq + count - 1) AS latest
                          FROM session_turns WHERE {where} GROUP BY session_id, agent) t
                    LEFT JOIN executions e ON e.id = t.last_execution AND e.env = 'production'
                    {'WHERE ' + ' AND '.join(outer) if outer else ''}
                    ORDER BY t.latest DESC LIMIT ?""",
                [*params, *outer_params, limit],
            ).fetchall()
        return [(sid, ag, int(n), first, last_at, _dumps(json.loads(last)[-1][1]), rel, which)
                for sid, ag, n, first, last_at, last, rel, which in rows]

    # ------------------------------------------------------------ memory
    def queue_memory(self, rows: Sequence[MemoryRow]) -> None:
        """Queue memory writes (env, key, seq, value JSON or None, agent, execution_id, written_at);
        UsageError, none of them queued, if the table cannot hold one."""
        self.writer.check("memory", rows)
        self.writer.put_many("memory", rows)

    def memory_value(self, env: str, key: str) -> tuple[str, _dt.datetime, str | None, str | None] | None:
        """``(value JSON, written_at, agent, execution_id)`` of a key, or None if absent or deleted."""
        self.flush()
        row = self.cursor().execute(
            "SELECT value, written_at, agent, execution_id FROM memory"
            " WHERE env = ? AND key = ? ORDER BY seq DESC LIMIT 1",
            [env, key],
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return row[0], row[1], row[2], row[3]

    def memory_items(
        self, env: str, prefix: str = "", *, limit: int | None = None, values: bool = True
    ) -> list[tuple[str, str | None, int, _dt.datetime, str | None, str | None]]:
        """``(key, value JSON or None if not asked for, size, written_at, agent, execution_id)``, by key."""
        self.flush()
        sql = f"""SELECT key, {'value' if values else 'NULL'}, strlen(value), written_at, agent, execution_id
                 FROM (SELECT * FROM memory WHERE env = ? AND starts_with(key, ?)
                       QUALIFY row_number() OVER (PARTITION BY key ORDER BY seq DESC) = 1)
                 WHERE value IS NOT NULL ORDER BY key"""
        params: list[Any] = [env, prefix]
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self.cursor().execute(sql, params).fetchall()

    def delete_memory(self, env: str, *, key: str | None = None, prefix: str | None = None) -> list[str]:
        """Delete a key (or every key under a prefix) of one environment; the keys that existed."""
        self.flush()  # rows still queued for these keys must not reappear afterwards
        with self.transaction() as cur:
            if key is not None:
                cond, param = "key = ?", key
            else:
                cond, param = "starts_with(key, ?)", prefix or ""
            live = cur.execute(
                f"""SELECT key FROM (SELECT key, value FROM memory WHERE env = ? AND {cond}
                        QUALIFY row_number() OVER (PARTITION BY key ORDER BY seq DESC) = 1)
                    WHERE value IS NOT NULL ORDER BY key""",
                [env, param],
            ).fetchall()
            cur.execute(f"DELETE FROM memory WHERE env = ? AND {cond}", [env, param])
        return [r[0] for r in live]

    def compact_memory(self) -> int:
        """Drop superseded memory rows and deleted keys; the number of rows removed."""
        with self.transaction() as cur:
            before = cur.execute("SELECT count(*) FROM memory").fetchone()
            cur.execute(
                """DELETE FROM memory USING (
                       SELECT env, key, max(seq) AS top, arg_max_null(value, seq) IS NULL AS gone
                       FROM memory GROUP BY env, key) AS t
                   WHERE memory.env = t.env AND memory.key = t.key AND (memory.seq < t.top OR t.gone)"""
            )
            after = cur.execute("SELECT count(*) FROM memory").fetchone()
        return int(before[0] if before else 0) - int(after[0] if after else 0)
