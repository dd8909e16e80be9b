"""SQL for LLM providers (shared by both environments) and who uses them."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from rf.ids import iso

if TYPE_CHECKING:
    import contextlib

    import duckdb

    from rf.store.writer import BatchWriter


class ProvidersMixin:
    """Mixed into :class:`rf.store.Store`."""

    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    if TYPE_CHECKING:

        def transaction(self) -> contextlib.AbstractContextManager[duckdb.DuckDBPyConnection]: ...

    def provider_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """Stored providers (the built-in mock has no row), by name."""
        sql = "SELECT name, kind, base_url, credential, model, created_at FROM providers"
        params: list[Any] = []
        if name is not None:
            sql += " WHERE name = ?"
            params.append(name)
        rows = self.cursor().execute(sql + " ORDER BY name", params).fetchall()
        return [
            {"name": r[0], "kind": r[1], "base_url": r[2], "credential": r[3], "model": r[4],
             "created_at": iso(r[5])}
            for r in rows
        ]

    def provider_exists(self, name: str) -> bool:
        """Inside a transaction: is there a row for ``name``?"""
        cur = self.cursor()
        return cur.execute("SELECT 1 FROM providers WHERE name = ?", [name]).fetchone() is not None

    def insert_provider(self, *, name: str, kind: str, base_url: str | None,
                        credential: str | None, model: str | None, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO providers VALUES (?, ?, ?, ?, ?, ?)", [name, kind, base_url, credential, model, now])

    def delete_provider(self, name: str) -> None:
        cur = self._write_cursor()
        cur.execute("DELETE FROM providers WHERE name = ?", [name])
        cur.execute("DELETE FROM provider_uses WHERE provider = ?", [name])

    def provider_uses(self, provider: str | None = None) -> dict[str, list[dict[str, Any]]]:
        """``{provider: [{env, agent, last_used_at}]}``, most recent first."""
        sql = "SELECT provider, env, agent, last_used_at FROM provider_uses"
        params: list[Any] = []
        if provider is not None:
            sql += " WHERE provider = ?"
            params.append(provider)
        out: dict[str, list[dict[str, Any]]] = {}
        for p, env, agent, at in self.cursor().execute(sql + " ORDER BY last_used_at DESC, env, agent",
                                                       params).fetchall():
            out.setdefault(p, []).append({"env": env, "agent": agent, "last_used_at": iso(at)})
        return out

    def note_provider_use(self, provider: str, env: str, agent: str, now: dt.datetime) -> None:
        """Record that ``agent`` in ``env`` called ``provider`` (upsert)."""
        with self.transaction() as cur:
            cur.execute(
                """INSERT INTO provider_uses VALUES (?, ?, ?, ?)
                   ON CONFLICT (provider, env, agent) DO UPDATE SET last_used_at = excluded.last_used_at""",
                [provider, env, agent, now],
            )
