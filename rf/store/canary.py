"""SQL for canary releases (table ``canaries``) and the per-arm figures of a running one.

Plain SQL on purpose (``percentile_cont … WITHIN GROUP``, ``count(*) FILTER``): a PostgreSQL
store must hold the same state, so replicas on one database agree on the canary.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from rf.ids import iso
from rf.models import PRODUCTION_RELEASE_KINDS

if TYPE_CHECKING:
    import duckdb

_COLUMNS = ("id, status, weight, stable_release_id, state, started_at, started_by, ended_at, ended_by,"
            " end_release_id, figures, score_dropped")


def _canary(row: tuple[Any, ...]) -> dict[str, Any]:
    return {"id": row[0], "status": row[1], "weight": float(row[2]), "stable_release_id": row[3],
            "state": json.loads(row[4]), "started_at": iso(row[5]), "started_by": row[6],
            "ended_at": iso(row[7]) if row[7] is not None else None, "ended_by": row[8],
            "end_release_id": row[9], "figures": json.loads(row[10]) if row[10] else None,
            "started": row[5], "ended": row[7], "score_dropped": int(row[11] or 0)}


class CanaryMixin:
    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def flush(self) -> None:  # provided by Store
        raise NotImplementedError

    def insert_canary(self, *, canary_id: str, weight: float,
                      stable_release_id: str | None, state: dict[str, Any], started_at: dt.datetime,
                      started_by: str) -> None:
        cur = self._write_cursor()
        cur.execute(
            "INSERT INTO canaries (id, status, weight, stable_release_id, state, started_at, started_by)"
            " VALUES (?, 'running', ?, ?, ?, ?, ?)",
            [canary_id, weight, stable_release_id, json.dumps(state), started_at, started_by],
        )

    def running_canary(self, cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, Any] | None:
        """The running canary (at most one), or None."""
        row = (cur or self.cursor()).execute(
            f"SELECT {_COLUMNS} FROM canaries WHERE status = 'running' ORDER BY id DESC LIMIT 1").fetchone()
        return _canary(row) if row else None

    def get_canary(self, canary_id: str | None = None) -> dict[str, Any] | None:
        """One canary by id (a prefix of at least 6 characters), or the newest one."""
        if canary_id is None:
            row = self.cursor().execute(f"SELECT {_COLUMNS} FROM canaries ORDER BY id DESC LIMIT 1").fetchone()
        else:
            row = self.cursor().execute(
                f"SELECT {_COLUMNS} FROM canaries WHERE id = ? OR starts_with(id, ?) ORDER BY id DESC LIMIT 1",
                [canary_id, canary_id]).fetchone()
        return _canary(row) if row else None

    def set_canary_weight(self, canary_id: str, weight: float) -> None:
        cur = self._write_cursor()
        cur.execute("UPDATE canaries SET weight = ? WHERE id = ? AND status = 'running'", [weight, canary_id])

    def end_canary(self, canary_id: str, *, status: str, ended_at: dt.datetime,
                   ended_by: str, end_release_id: str, figures: dict[str, Any] | None) -> None:
        cur = self._write_cursor()
        cur.execute(
            "UPDATE canaries SET status = ?, ended_at = ?, ended_by = ?, end_release_id = ?, figures = ?"
            " WHERE id = ? AND status = 'running'",
            [status, ended_at, ended_by, end_release_id, json.dumps(figures) if figures is not None else None,
             canary_id],
        )

    def production_release_id(self, cur: duckdb.DuckDBPyConnection | None = None) -> str | None:
        """The newest release that changed production (publish, rollback, canary-promote)."""
        row = (cur or self.cursor()).execute(
            "SELECT id FROM releases WHERE kind IN (?, ?, ?) ORDER BY id DESC LIMIT 1", list(PRODUCTION_RELEASE_KINDS),
        ).fetchone()
        return row[0] if row else None

    def production_state(self) -> tuple[str | None, dict[str, str], dict[str, int]]:
        """What production runs, read in one statement (one snapshot, so never half of a release):
        ``(release id, {agent: commit}, {prompt: published version})``."""
        rows = self.cursor().execute(
            "SELECT 'r', id, NULL FROM (SELECT id FROM releases WHERE kind IN (?, ?, ?) ORDER BY id DESC LIMIT 1) AS latest"
            " UNION ALL SELECT 'a', agent, commit_id FROM agent_heads WHERE env = 'production'"
            " UNION ALL SELECT 'p', prompt, CAST(version AS VARCHAR) FROM prompt_pointers"
            " WHERE env = 'production' AND version IS NOT NULL",
            list(PRODUCTION_RELEASE_KINDS)).fetchall()
        release_id = next((r[1] for r in rows if r[0] == "r"), None)
        agents = {r[1]: r[2] for r in rows if r[0] == "a" and r[2] is not None}
        prompts = {r[1]: int(r[2]) for r in rows if r[0] == "p"}
        return release_id, agents, prompts

    def canary_arm_figures(self, since: dt.datetime, until: dt.datetime | None = None
                           ) -> dict[str, dict[str, Any]]:
        """Per arm (``stable``, ``canary``) of the production executions that arrived in
        [since, until]: ended executions, failures (anything but succeeded), p50/p95 duration."""
        self.flush()
        # (eval runs on production's state always take stable: they are not production's traffic)
        where, params = ["env = 'production'", "arm IS NOT NULL", "started_at >= ?", "source <> 'eval'"], [since]
        if until is not None:
            where.append("started_at <= ?")
            params.append(until)
        rows = self.cursor().execute(
            f"""SELECT arm, max(release_id), count(*), count(*) FILTER (WHERE status <> 'succeeded'),
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms),
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms)
                FROM executions WHERE {' AND '.join(where)} GROUP BY arm""",
            params,
        ).fetchall()
        return {arm: {"release_id": release_id, "executions": int(count), "failures": int(failures),
                      "p50_ms": None if p50 is None else round(float(p50), 3),
                      "p95_ms": None if p95 is None else round(float(p95), 3)}
                for arm, release_id, count, failures, p50, p95 in rows}

    # ------------------------------------------------------------ live scoring
    def insert_canary_score(self, *, canary_id: str, execution_id: str, arm: str, agent: str, score: float,
                            scores: list[dict[str, Any]], scored_at: dt.datetime) -> None:
        self._write_cursor().execute("INSERT INTO canary_scores VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [canary_id, execution_id, arm, agent, score, json.dumps(scores), scored_at])

    def add_canary_dropped(self, canary_id: str, dropped: int) -> None:
        """Count executions sampled for scoring but dropped (the scoring queue was full)."""
        self._write_cursor().execute("UPDATE canaries SET score_dropped = coalesce(score_dropped, 0) + ? WHERE id = ?",
                    [dropped, canary_id])

    def canary_score_figures(self, canary_id: str) -> dict[str, dict[str, Any]]:
        """Per arm of a canary's scored executions: how many, the sum of their scores and of
        their squares (the mean and variance follow), how many passed every scorer."""
        rows = self.cursor().execute(
            """SELECT arm, count(*), sum(score), sum(score * score), count(*) FILTER (WHERE score >= 1)
               FROM canary_scores WHERE canary_id = ? GROUP BY arm""", [canary_id]).fetchall()
        return {arm: {"scored": int(n), "sum": float(total or 0.0), "sum_squares": float(squares or 0.0),
                      "passed": int(passed)} for arm, n, total, squares, passed in rows}

    def canary_scores(self, canary_id: str, limit: int = 20, *, failed_only: bool = True) -> list[dict[str, Any]]:
        """A canary's newest scored executions (by default those that missed a scorer)."""
        where = "canary_id = ?" + (" AND score < 1" if failed_only else "")
        rows = self.cursor().execute(
            f"SELECT execution_id, arm, agent, score, scores, scored_at FROM canary_scores WHERE {where}"
            " ORDER BY scored_at DESC LIMIT ?", [canary_id, limit]).fetchall()
        return [{"execution_id": r[0], "arm": r[1], "agent": r[2], "score": float(r[3]), "scores": json.loads(r[4]),
                 "scored_at": iso(r[5])} for r in rows]
