"""SQL for agents, commits, blobs and per-environment heads."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from rf.ids import iso
from rf.models import Commit

if TYPE_CHECKING:
    import duckdb


class AgentsMixin:
    """Mixed into :class:`rf.store.Store`."""

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    # ------------------------------------------------------------ blobs
    def put_blobs(self, blobs: dict[str, bytes]) -> int:
        """Insert blobs that are not stored yet; returns how many were new."""
        cur = self._write_cursor()
        if not blobs:
            return 0
        shas = list(blobs)
        existing = {
            r[0]
            for r in cur.execute(
                "SELECT sha256 FROM blobs WHERE sha256 IN (SELECT unnest(?::VARCHAR[]))", [shas]
            ).fetchall()
        }
        new = [(sha, len(blobs[sha]), blobs[sha]) for sha in shas if sha not in existing]
        if new:
            cur.executemany("INSERT INTO blobs VALUES (?, ?, ?)", new)
        return len(new)

    def get_blobs(self, shas: list[str]) -> dict[str, bytes]:
        if not shas:
            return {}
        rows = self.cursor().execute(
            "SELECT sha256, data FROM blobs WHERE sha256 IN (SELECT unnest(?::VARCHAR[]))", [list(set(shas))]
        ).fetchall()
        return {sha: bytes(data) for sha, data in rows}

    # ------------------------------------------------------------ agents
    def upsert_agent(self, name: str, description: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute(
            """INSERT INTO agents VALUES (?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET description = excluded.description, updated_at = excluded.updated_at""",
            [name, description, now, now],
        )

    def agent_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Agents with their heads: name, description, staging, production, times."""
        sql = """
            SELECT a.name, a.description, s.commit_id, p.commit_id, a.created_at, a.updated_at
            FROM agents a
            LEFT JOIN agent_heads s ON s.agent = a.name AND s.env = 'staging'
            LEFT JOIN agent_heads p ON p.agent = a.name AND p.env = 'production'
        """
        params: list[Any] = []
        if name is not None:
            sql += " WHERE a.name = ?"
            params.append(name)
        sql += " ORDER BY a.name"
        return [
            {
                "name": r[0],
                "description": r[1],
                "staging_commit": r[2],
                "production_commit": r[3],
                "created_at": iso(r[4]),
                "updated_at": iso(r[5]),
            }
            for r in self.cursor().execute(sql, params).fetchall()
        ]

    # ------------------------------------------------------------ commits
    def insert_commit(self, commit: Commit, created_at: dt.datetime,
                      config: dict[str, Any]) -> None:
        cur = self._write_cursor()
        cur.execute(
            "INSERT INTO commits VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [commit.id, commit.agent, commit.parent, commit.message, commit.author, created_at,
             json.dumps(commit.tree, sort_keys=True), json.dumps(config, sort_keys=True, default=str)],
        )

    @staticmethod
    def _commit(row: tuple[Any, ...]) -> Commit:
        return Commit(id=row[0], agent=row[1], parent=row[2], message=row[3], author=row[4],
                      created_at=iso(row[5]), tree=json.loads(row[6]))

    def get_commit(self, commit_id: str) -> Commit | None:
        row = self.cursor().execute(
            "SELECT id, agent, parent, message, author, created_at, tree FROM commits WHERE id = ?", [commit_id]
        ).fetchone()
        return self._commit(row) if row else None

    def commit_exists(self, commit_id: str) -> bool:
        return self.cursor().execute("SELECT 1 FROM commits WHERE id = ?", [commit_id]).fetchone() is not None

    def find_commits(self, agent: str, prefix: str) -> list[str]:
        rows = self.cursor().execute(
            "SELECT id FROM commits WHERE agent = ? AND starts_with(id, ?)", [agent, prefix]
        ).fetchall()
        return [r[0] for r in rows]

    def get_commit_config(self, commit_id: str) -> dict[str, Any]:
        row = self.cursor().execute("SELECT config FROM commits WHERE id = ?", [commit_id]).fetchone()
        return json.loads(row[0]) if row else {}

    def get_commit_configs(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        """Parsed agent.toml of many commits in one query."""
        if not ids:
            return {}
        rows = self.cursor().execute(
            "SELECT id, config FROM commits WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(set(ids))]
        ).fetchall()
        return {cid: json.loads(config) for cid, config in rows}

    def get_commit_trees(self, ids: list[str]) -> dict[str, dict[str, str]]:
        """File trees of many commits in one query."""
        if not ids:
            return {}
        rows = self.cursor().execute(
            "SELECT id, tree FROM commits WHERE id IN (SELECT unnest(?::VARCHAR[]))", [list(set(ids))]
        ).fetchall()
        return {cid: json.loads(tree) for cid, tree in rows}

    def list_commits(self, agent: str) -> list[Commit]:
        """Every commit of an agent, newest first."""
        rows = self.cursor().execute(
            "SELECT id, agent, parent, message, author, created_at, tree FROM commits WHERE agent = ?"
            " ORDER BY created_at DESC, id",
            [agent],
        ).fetchall()
        return [self._commit(r) for r in rows]

    def commit_parents(self, agents: list[str] | None = None) -> dict[str, dict[str, str | None]]:
        """``{agent: {commit_id: parent_id}}`` — cheap, for ahead/behind counts."""
        sql = "SELECT agent, id, parent FROM commits"
        params: list[Any] = []
        if agents is not None:
            sql += " WHERE agent IN (SELECT unnest(?::VARCHAR[]))"
            params.append(agents)
        out: dict[str, dict[str, str | None]] = {}
        for agent, cid, parent in self.cursor().execute(sql, params).fetchall():
            out.setdefault(agent, {})[cid] = parent
        return out

    # ------------------------------------------------------------ heads
    def get_head(self, agent: str, env: str) -> str | None:
        row = self.cursor().execute(
            "SELECT commit_id FROM agent_heads WHERE agent = ? AND env = ?", [agent, env]
        ).fetchone()
        return row[0] if row else None

    def set_head(self, agent: str, env: str, commit_id: str | None,
                 now: dt.datetime) -> None:
        cur = self._write_cursor()
        if commit_id is None:
            cur.execute("DELETE FROM agent_heads WHERE agent = ? AND env = ?", [agent, env])
            return
        cur.execute(
            """INSERT INTO agent_heads VALUES (?, ?, ?, ?)
               ON CONFLICT (agent, env) DO UPDATE SET commit_id = excluded.commit_id, updated_at = excluded.updated_at""",
            [agent, env, commit_id, now],
        )
