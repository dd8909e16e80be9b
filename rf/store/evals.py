"""SQL for stored eval runs (``rf eval``): one row per run, the whole result as JSON."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb


class EvalsMixin:
    """Mixed into :class:`rf.store.Store`."""

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def insert_eval_run(self, run_id: str, env: str, agent: str, commit: str,
                        created_at: dt.datetime, total: int, passed: int, result: dict[str, Any]) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO eval_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [run_id, env, agent, commit, created_at, total, passed, json.dumps(result, default=str)])

    def eval_run_results(self, agent: str | None = None, env: str | None = None, limit: int = 50,
                         run_id: str | None = None) -> list[dict[str, Any]]:
        """Stored results (the JSON of each run), newest first."""
        sql, params = "SELECT result FROM eval_runs WHERE true", []
        for column, value in (("agent", agent), ("env", env)):
            if value is not None:
                sql += f" AND {column} = ?"
                params.append(value)
        if run_id is not None:
            sql += " AND starts_with(id, ?)"
            params.append(run_id)
        rows = self.cursor().execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit]).fetchall()
        return [json.loads(r[0]) for r in rows]
