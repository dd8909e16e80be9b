"""SQL for the release history (append-only)."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from rf.ids import iso

if TYPE_CHECKING:
    import duckdb


class ReleasesMixin:
    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def insert_release(
        self,
        *,
        release_id: str,
        created_at: dt.datetime,
        author: str,
        message: str,
        plan_id: str,
        kind: str,
        items: list[dict[str, Any]],
        evidence: dict[str, Any] | None = None,
    ) -> None:
        cur = self._write_cursor()
        cur.execute(
            "INSERT INTO releases (id, created_at, author, message, plan_id, kind, evidence)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [release_id, created_at, author, message, plan_id, kind,
             json.dumps(evidence, default=str) if evidence else None],
        )
        if not items:  # (a canary's weight change or abort: recorded, production unchanged)
            return
        cur.executemany(
            "INSERT INTO release_items VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                [release_id, i, item["kind"], item["name"], json.dumps(item.get("before")),
                 json.dumps(item.get("after")), item.get("summary", "")]
                for i, item in enumerate(items)
            ],
        )

    def list_releases(self, limit: int = 100, id_prefix: str | None = None) -> list[dict[str, Any]]:
        where = ""
        params: list[Any] = [limit]
        if id_prefix is not None:
            where, params = "WHERE starts_with(id, ?)", [id_prefix, limit]
        rows = self.cursor().execute(
            f"SELECT id, created_at, author, message, plan_id, kind, evidence FROM releases {where}"
            " ORDER BY id DESC LIMIT ?",
            params,
        ).fetchall()
        releases = [
            {"id": r[0], "created_at": iso(r[1]), "author": r[2], "message": r[3], "plan_id": r[4],
             "kind": r[5], "items": [], "evidence": json.loads(r[6]) if r[6] else {}}
            for r in rows
        ]
        if releases:
            by_id = {r["id"]: r for r in releases}
            items = self.cursor().execute(
                "SELECT release_id, kind, name, before, after, summary FROM release_items"
                " WHERE release_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY release_id, position",
                [list(by_id)],
            ).fetchall()
            for rid, kind, name, before, after, summary in items:
                by_id[rid]["items"].append(
                    {"kind": kind, "name": name, "before": json.loads(before), "after": json.loads(after),
                     "summary": summary}
                )
        return releases

    def save_plan(self, plan_id: str, items: list[dict[str, Any]], created_at: dt.datetime) -> None:
        self.cursor().execute(
            "INSERT INTO release_plans (id, created_at, items) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
            [plan_id, created_at, json.dumps(items, default=str)],
        )

    def get_plan(self, plan_id: str) -> list[dict[str, Any]] | None:
        row = self.cursor().execute("SELECT items FROM release_plans WHERE id = ?", [plan_id]).fetchone()
        return json.loads(row[0]) if row else None

    def save_plan_evals(self, plan_id: str, evals: list[dict[str, Any]]) -> None:
        """A plan's latest eval evidence (the release gate), what ``publish --plan ID`` checks."""
        self.cursor().execute("UPDATE release_plans SET evals = ? WHERE id = ?",
                              [json.dumps(evals, default=str), plan_id])

    def get_plan_evals(self, plan_id: str) -> list[dict[str, Any]] | None:
        """The evidence :meth:`save_plan_evals` stored, or None (never evaluated)."""
        row = self.cursor().execute("SELECT evals FROM release_plans WHERE id = ?", [plan_id]).fetchone()
        return json.loads(row[0]) if row and row[0] is not None else None
