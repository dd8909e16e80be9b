"""SQL for prompts: immutable versions and one pointer per environment.

``prompt_versions`` rows are only ever inserted. What an environment sees is
the row of ``prompt_pointers`` for it: staging → the draft version,
production → the published version. Writes take the open transaction
(``cur``) of the caller, so a new version and the pointer move it causes, or
a publish and its release record, commit together or not at all.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from rf.ids import iso
from rf.models import PromptVersion

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter

_VERSION_COLUMNS = "prompt, version, text, variables, author, message, created_at"


class PromptsMixin:
    """Mixed into :class:`rf.store.Store`."""

    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    @staticmethod
    def _prompt_version(row: tuple[Any, ...]) -> PromptVersion:
        return PromptVersion(name=row[0], version=int(row[1]), text=row[2], variables=json.loads(row[3]),
                             author=row[4], message=row[5], created_at=iso(row[6]))

    # ------------------------------------------------------------ reads
    def prompt_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Prompts with both pointers, the draft's variables and the version count."""
        sql = """
            SELECT p.name, s.version, pub.version, v.variables,
                   (SELECT count(*) FROM prompt_versions c WHERE c.prompt = p.name),
                   p.created_at, p.updated_at
            FROM prompts p
            LEFT JOIN prompt_pointers s ON s.prompt = p.name AND s.env = 'staging'
            LEFT JOIN prompt_pointers pub ON pub.prompt = p.name AND pub.env = 'production'
            LEFT JOIN prompt_versions v ON v.prompt = p.name AND v.version = s.version
        """
        params: list[Any] = []
        if name is not None:
            sql += " WHERE p.name = ?"
            params.append(name)
        sql += " ORDER BY p.name"
        return [
            {
                "name": r[0],
                "draft_version": r[1],
                "published_version": r[2],
                "variables": json.loads(r[3]) if r[3] else [],
                "versions": int(r[4]),
                "created_at": iso(r[5]),
                "updated_at": iso(r[6]),
            }
            for r in self.cursor().execute(sql, params).fetchall()
        ]

    def prompt_exists(self, name: str, cur: duckdb.DuckDBPyConnection | None = None) -> bool:
        return (cur or self.cursor()).execute("SELECT 1 FROM prompts WHERE name = ?", [name]).fetchone() is not None

    def existing_prompts(self, names: list[str]) -> set[str]:
        if not names:
            return set()
        rows = self.cursor().execute(
            "SELECT name FROM prompts WHERE name IN (SELECT unnest(?::VARCHAR[]))", [names]
        ).fetchall()
        return {r[0] for r in rows}

    def get_prompt_pointer(self, name: str, env: str,
                           cur: duckdb.DuckDBPyConnection | None = None) -> int | None:
        """The version ``env`` points at (None if none). Pass ``cur`` to read inside a transaction."""
        row = (cur or self.cursor()).execute(
            "SELECT version FROM prompt_pointers WHERE prompt = ? AND env = ?", [name, env]
        ).fetchone()
        return int(row[0]) if row else None

    def get_prompt_version(self, name: str, version: int,
                           cur: duckdb.DuckDBPyConnection | None = None) -> PromptVersion | None:
        row = (cur or self.cursor()).execute(
            f"SELECT {_VERSION_COLUMNS} FROM prompt_versions WHERE prompt = ? AND version = ?", [name, version]
        ).fetchone()
        return self._prompt_version(row) if row else None

    def resolve_prompt(self, name: str, env: str) -> PromptVersion | None:
        """The version ``env`` points at, in one query (the hot path of ``ctx.prompts``)."""
        row = self.cursor().execute(
            f"""SELECT {', '.join('v.' + c.strip() for c in _VERSION_COLUMNS.split(','))}
                FROM prompt_pointers p
                JOIN prompt_versions v ON v.prompt = p.prompt AND v.version = p.version
                WHERE p.prompt = ? AND p.env = ?""",
            [name, env],
        ).fetchone()
        return self._prompt_version(row) if row else None

    def list_prompt_versions(self, name: str) -> list[PromptVersion]:
        """Every version of a prompt, newest first."""
        rows = self.cursor().execute(
            f"SELECT {_VERSION_COLUMNS} FROM prompt_versions WHERE prompt = ? ORDER BY version DESC", [name]
        ).fetchall()
        return [self._prompt_version(r) for r in rows]

    def prompt_pointer_pairs(self) -> list[tuple[str, int | None, int | None]]:
        """``(name, draft, published)`` for every prompt that either environment has (for
        releases); draft None: deleted in staging."""
        rows = self.cursor().execute(
            """SELECT p.name, s.version, pub.version
               FROM prompts p
               LEFT JOIN prompt_pointers s ON s.prompt = p.name AND s.env = 'staging'
               LEFT JOIN prompt_pointers pub ON pub.prompt = p.name AND pub.env = 'production'
               WHERE s.version IS NOT NULL OR pub.version IS NOT NULL
               ORDER BY p.name"""
        ).fetchall()
        return [(r[0], int(r[1]) if r[1] is not None else None, int(r[2]) if r[2] is not None else None)
                for r in rows]

    # ------------------------------------------------------------ writes (inside a transaction)
    def insert_prompt(self, name: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO prompts VALUES (?, ?, ?)", [name, now, now])

    def touch_prompt(self, name: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("UPDATE prompts SET updated_at = ? WHERE name = ?", [now, name])

    def insert_prompt_version(self, version: PromptVersion,
                              created_at: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute(
            "INSERT INTO prompt_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
            [version.name, version.version, version.text, json.dumps(version.variables), version.author,
             version.message, created_at],
        )

    def next_prompt_version(self, name: str) -> int:
        cur = self.cursor()
        row = cur.execute("SELECT coalesce(max(version), 0) FROM prompt_versions WHERE prompt = ?", [name]).fetchone()
        return int(row[0]) + 1 if row else 1

    def set_prompt_pointer(self, name: str, env: str, version: int | None,
                           now: dt.datetime) -> None:
        """Point ``env`` at ``version`` (None removes the pointer: e.g. roll back a first publish)."""
        cur = self._write_cursor()
        if version is None:
            cur.execute("DELETE FROM prompt_pointers WHERE prompt = ? AND env = ?", [name, env])
            return
        cur.execute(
            """INSERT INTO prompt_pointers VALUES (?, ?, ?, ?)
               ON CONFLICT (prompt, env) DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at""",
            [name, env, version, now],
        )
