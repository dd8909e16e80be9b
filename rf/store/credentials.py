"""SQL for credentials: metadata only (the value lives in the keyring, see rf/secrets.py)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from rf.ids import iso

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter


class CredentialsMixin:
    """Mixed into :class:`rf.store.Store`."""

    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    @staticmethod
    def _credential(row: tuple[Any, ...]) -> dict[str, Any]:
        return {"name": row[0], "description": row[1], "created_at": iso(row[2]), "rotated_at": iso(row[3])}

    def credential_rows(self, name: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT name, description, created_at, rotated_at FROM credentials"
        params: list[Any] = []
        if name is not None:
            sql += " WHERE name = ?"
            params.append(name)
        return [self._credential(r) for r in self.cursor().execute(sql + " ORDER BY name", params).fetchall()]

    def upsert_credential(self, name: str, description: str | None,
                          now: dt.datetime) -> None:
        """Create, or mark as rotated (``description=None`` keeps the current one)."""
        cur = self._write_cursor()
        cur.execute(
            """INSERT INTO credentials VALUES (?, ?, ?, ?)
               ON CONFLICT (name) DO UPDATE SET
                 description = CASE WHEN ? THEN excluded.description ELSE credentials.description END,
                 rotated_at = excluded.rotated_at""",
            [name, description or "", now, now, description is not None],
        )

    def delete_credential_row(self, name: str) -> None:
        cur = self._write_cursor()
        cur.execute("DELETE FROM credentials WHERE name = ?", [name])

    def providers_using_credential(self, name: str) -> list[str]:
        """LLM providers whose ``credential`` column names ``name`` (if that table exists yet).

        The providers table belongs to another capability; asking the catalog
        first keeps this query harmless on a schema without it.
        """
        has_column = self.cursor().execute(
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'providers' AND column_name IN ('name', 'credential')"
        ).fetchone()
        if not has_column or has_column[0] < 2:
            return []
        rows = self.cursor().execute(
            "SELECT name FROM providers WHERE credential = ? ORDER BY name", [name]
        ).fetchall()
        return [str(r[0]) for r in rows]
