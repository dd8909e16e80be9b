"""SQL for endpoint keys: a name, an environment and the key's SHA-256 — never the key."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from rf.ids import iso

if TYPE_CHECKING:
    import duckdb


class KeysMixin:
    """Mixed into :class:`rf.store.Store`."""

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    @staticmethod
    def _key(row: tuple[Any, ...]) -> dict[str, Any]:
        return {"id": row[0], "env": row[1], "name": row[2], "prefix": row[3], "created_at": iso(row[4]),
                "created_by": row[5], "revoked_at": iso(row[6]) if row[6] is not None else ""}

    def key_rows(self, env: str | None = None, *, include_revoked: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT id, env, name, prefix, created_at, created_by, revoked_at FROM endpoint_keys WHERE true"
        params: list[Any] = []
        if env is not None:
            sql += " AND env = ?"
            params.append(env)
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        return [self._key(r) for r in self.cursor().execute(sql + " ORDER BY env, name, id", params).fetchall()]

    def live_key_hashes(self) -> dict[str, tuple[str, str]]:
        """``{sha256 hex: (env, key id)}`` of every key that is not revoked."""
        rows = self.cursor().execute(
            "SELECT key_hash, env, id FROM endpoint_keys WHERE revoked_at IS NULL").fetchall()
        return {r[0]: (r[1], r[2]) for r in rows}

    def insert_key(self, *, key_id: str, env: str, name: str, prefix: str,
                   key_hash: str, created_by: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO endpoint_keys VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                    [key_id, env, name, prefix, key_hash, now, created_by])

    def revoke_key_row(self, key_id: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("UPDATE endpoint_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [now, key_id])
