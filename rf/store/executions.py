"""SQL for executions (written through the batching writer)."""

from __future__ import annotations

import datetime as _dt
import json
from typing import TYPE_CHECKING, Any

from rf.ids import iso, parse_iso
from rf.jsonfast import dumps
from rf.models import Execution

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter

_COLUMNS = (
    "id, env, agent, commit_id, source, status, input, output, error, error_type, traceback, logs,"
    " started_at, ended_at, duration_ms, session_id"
)


def _dump(value: Any) -> str | None:
    return None if value is None else dumps(value)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class ExecutionsMixin:
    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def flush(self) -> None:  # provided by Store
        raise NotImplementedError

    def record_execution(self, ex: Execution, started: _dt.datetime | None = None,
                         ended: _dt.datetime | None = None, root_span: str | None = None) -> None:
        """Queue an execution row (``started``/``ended``: its times as datetimes, when the
        caller has them; ``root_span``: its trace's root span, see rf.store.traces); it is
        durable after the writer's next batch."""
        self.writer.put(
            "executions",
            (
                ex.id, ex.env, ex.agent, ex.commit, ex.source, ex.status,
                _dump(ex.input), _dump(ex.output), ex.error, ex.error_type, ex.traceback, ex.logs,
                started or parse_iso(ex.started_at), ended or parse_iso(ex.ended_at), float(ex.duration_ms),
                ex.session_id, root_span,
            ),
        )

    @staticmethod
    def _execution(row: tuple[Any, ...]) -> Execution:
        return Execution(
            id=row[0], env=row[1], agent=row[2], commit=row[3], source=row[4], status=row[5],
            input=_load(row[6]), output=_load(row[7]), error=row[8], error_type=row[9],
            traceback=row[10], logs=row[11] or "", started_at=iso(row[12]), ended_at=iso(row[13]),
            duration_ms=row[14], session_id=row[15],
        )

    def list_executions(
        self,
        env: str,
        *,
        agent: str | None = None,
        status: str | None = None,
        source: str | None = None,
        session_id: str | None = None,
        limit: int = 50,
        before: str | None = None,
        full: bool = False,
    ) -> list[Execution]:
        """Executions of one environment, newest first (ids sort by time)."""
        self.flush()
        cols = _COLUMNS if full else _COLUMNS.replace("traceback, logs", "NULL, NULL")
        where = ["env = ?"]
        params: list[Any] = [env]
        for column, value in (("agent", agent), ("status", status), ("session_id", session_id)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if source is not None:
            where.append("(source = ? OR starts_with(source, ? || ':'))")
            params.extend([source, source])
        if before is not None:
            where.append("id < ?")
            params.append(before)
        params.append(limit)
        rows = self.cursor().execute(
            f"SELECT {cols} FROM executions WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?", params
        ).fetchall()
        return [self._execution(r) for r in rows]

    def get_execution(self, execution_id: str) -> Execution | None:
        self.flush()
        row = self.cursor().execute(f"SELECT {_COLUMNS} FROM executions WHERE id = ?", [execution_id]).fetchone()
        return self._execution(row) if row else None

    def find_executions(self, prefix: str, limit: int = 5) -> list[str]:
        self.flush()
        rows = self.cursor().execute(
            "SELECT id FROM executions WHERE starts_with(id, ?) LIMIT ?", [prefix, limit]
        ).fetchall()
        return [r[0] for r in rows]

    def count_executions(self, env: str) -> int:
        self.flush()
        row = self.cursor().execute("SELECT count(*) FROM executions WHERE env = ?", [env]).fetchone()
        return int(row[0]) if row else 0
