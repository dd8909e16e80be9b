"""SQL for users, their personal tokens (SHA-256 only, never the token), approvals and the audit log.

The audit log is append-only: this module inserts into ``audit_log`` and reads it, and has
no statement that updates or deletes a row of it.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from rf.ids import iso

if TYPE_CHECKING:
    import duckdb


class UsersMixin:
    """Mixed into :class:`rf.store.Store`."""

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    # ------------------------------------------------------------ users
    def user_rows(self) -> list[dict[str, Any]]:
        rows = self.cursor().execute(
            "SELECT u.name, u.role, u.created_at, u.created_by, "
            "(SELECT count(*) FROM user_tokens t WHERE t.user_name = u.name AND t.revoked_at IS NULL) "
            "FROM users u ORDER BY u.name").fetchall()
        return [{"name": r[0], "role": r[1], "created_at": iso(r[2]), "created_by": r[3], "tokens": r[4]}
                for r in rows]

    def insert_user(self, *, name: str, role: str, created_by: str,
                    now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO users VALUES (?, ?, ?, ?)", [name, role, now, created_by])

    def set_user_role_row(self, name: str, role: str) -> None:
        cur = self._write_cursor()
        cur.execute("UPDATE users SET role = ? WHERE name = ?", [role, name])

    def delete_user_row(self, name: str, now: dt.datetime) -> None:
        """Remove a user; their live tokens are revoked (the rows stay, for the record)."""
        cur = self._write_cursor()
        cur.execute("UPDATE user_tokens SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL", [now, name])
        cur.execute("DELETE FROM users WHERE name = ?", [name])

    # ------------------------------------------------------------ personal tokens
    @staticmethod
    def _token(row: tuple[Any, ...]) -> dict[str, Any]:
        return {"id": row[0], "user": row[1], "name": row[2], "prefix": row[3], "created_at": iso(row[4]),
                "created_by": row[5], "revoked_at": iso(row[6]) if row[6] is not None else ""}

    def token_rows(self, user: str | None = None, *, include_revoked: bool = False) -> list[dict[str, Any]]:
        sql = ("SELECT id, user_name, name, prefix, created_at, created_by, revoked_at FROM user_tokens WHERE true")
        params: list[Any] = []
        if user is not None:
            sql += " AND user_name = ?"
            params.append(user)
        if not include_revoked:
            sql += " AND revoked_at IS NULL"
        return [self._token(r) for r in
                self.cursor().execute(sql + " ORDER BY user_name, created_at, id", params).fetchall()]

    def live_token_hashes(self) -> dict[str, tuple[str, str, str]]:
        """``{sha256 hex: (user, role, token id)}`` of every live token of an existing user."""
        rows = self.cursor().execute(
            "SELECT t.token_hash, u.name, u.role, t.id FROM user_tokens t JOIN users u ON u.name = t.user_name "
            "WHERE t.revoked_at IS NULL").fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def insert_token(self, *, token_id: str, user: str, name: str, prefix: str,
                     token_hash: str, created_by: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO user_tokens VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                    [token_id, user, name, prefix, token_hash, now, created_by])

    def revoke_token_row(self, token_id: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("UPDATE user_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [now, token_id])

    # ------------------------------------------------------------ approvals of a release plan
    def approval_rows(self, plan_id: str) -> list[dict[str, Any]]:
        rows = self.cursor().execute(
            "SELECT plan_id, approver, message, created_at FROM plan_approvals WHERE plan_id = ? "
            "ORDER BY created_at, approver", [plan_id]).fetchall()
        return [{"plan_id": r[0], "approver": r[1], "message": r[2], "created_at": iso(r[3])} for r in rows]

    def plan_author(self, plan_id: str) -> str | None:
        row = self.cursor().execute("SELECT author FROM plan_authors WHERE plan_id = ?", [plan_id]).fetchone()
        return str(row[0]) if row else None

    def insert_plan_author(self, plan_id: str, author: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO plan_authors VALUES (?, ?, ?) ON CONFLICT DO NOTHING", [plan_id, author, now])

    def insert_approval(self, *, plan_id: str, approver: str, message: str,
                        now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO plan_approvals VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    [plan_id, approver, message, now])

    # ------------------------------------------------------------ audit log (append-only)
    def insert_audit(self, *, entry_id: str, now: dt.datetime, actor: str,
                     role: str, action: str, target: str, detail: dict[str, Any]) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [entry_id, now, actor, role, action, target, json.dumps(detail, sort_keys=True, default=str)])

    def audit_rows(self, since: dt.datetime | None = None, limit: int = 200) -> list[dict[str, Any]]:
        sql = "SELECT id, created_at, actor, role, action, target, detail FROM audit_log"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE created_at >= ?"
            params.append(since)
        rows = self.cursor().execute(sql + " ORDER BY created_at DESC, id DESC LIMIT ?", [*params, limit]).fetchall()
        return [{"id": r[0], "at": iso(r[1]), "actor": r[2], "role": r[3], "action": r[4], "target": r[5],
                 "detail": json.loads(r[6]) if r[6] else {}} for r in rows]
