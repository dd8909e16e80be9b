"""SQL for triggers."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from rf.ids import iso

if TYPE_CHECKING:
    import duckdb

_COLUMNS = (
    "id, env, name, kind, agent, schedule, timezone, watch_path, input, headers, accept, overlap, catch_up,"
    " enabled, live, source_id, created_at, updated_at, last_scheduled_at"
)


class TriggersMixin:
    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    @staticmethod
    def _trigger_row(r: tuple[Any, ...]) -> dict[str, Any]:
        return {
            "id": r[0], "env": r[1], "name": r[2], "kind": r[3], "agent": r[4], "schedule": r[5],
            "timezone": r[6], "watch_path": r[7], "input": json.loads(r[8]) if r[8] is not None else None,
            "headers": json.loads(r[9]), "accept": r[10], "overlap": r[11], "catch_up": r[12],
            "enabled": bool(r[13]), "live": bool(r[14]), "source_id": r[15], "created_at": iso(r[16]),
            "updated_at": iso(r[17]), "last_scheduled_at": iso(r[18]) if r[18] else None,
        }

    def insert_trigger(self, t: dict[str, Any], now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute(
            f"INSERT INTO triggers ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [t["id"], t["env"], t["name"], t["kind"], t["agent"], t.get("schedule"), t.get("timezone"),
             t.get("watch_path"), json.dumps(t.get("input")) if t.get("input") is not None else None,
             json.dumps(t.get("headers") or []), t.get("accept", "json"), t.get("overlap", "skip"),
             t.get("catch_up", "none"), t.get("enabled", True), t.get("live", True), t.get("source_id"),
             now, now, None],
        )

    def trigger_rows(self, env: str | None = None, *, live_only: bool = False) -> list[dict[str, Any]]:
        where, params = [], []
        if env is not None:
            where.append("env = ?")
            params.append(env)
        if live_only:
            where.append("live")
        sql = f"SELECT {_COLUMNS} FROM triggers" + (" WHERE " + " AND ".join(where) if where else "")
        return [self._trigger_row(r) for r in self.cursor().execute(sql + " ORDER BY created_at, id", params).fetchall()]

    def get_trigger_row(self, trigger_id: str, cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, Any] | None:
        c = cur or self.cursor()
        row = c.execute(f"SELECT {_COLUMNS} FROM triggers WHERE id = ?", [trigger_id]).fetchone()
        return self._trigger_row(row) if row else None

    def find_triggers(self, prefix: str) -> list[str]:
        return [r[0] for r in self.cursor().execute(
            "SELECT id FROM triggers WHERE starts_with(id, ?) OR name = ?", [prefix, prefix]).fetchall()]

    def update_trigger(self, trigger_id: str, now: dt.datetime,
                       **fields: Any) -> None:
        cur = self._write_cursor()
        sets = ", ".join(f"{k} = ?" for k in fields)
        cur.execute(f"UPDATE triggers SET {sets}, updated_at = ? WHERE id = ?", [*fields.values(), now, trigger_id])

    def set_trigger_scheduled(self, trigger_id: str, when: dt.datetime) -> None:
        self.cursor().execute("UPDATE triggers SET last_scheduled_at = ? WHERE id = ?", [when, trigger_id])

    def claim_trigger_slot(self, trigger_id: str, slot: dt.datetime, now: dt.datetime) -> bool:
        """Claim one cron slot of a trigger for this process: True for the first claim only (the
        servers on one database fire each slot once: the one whose claim wins)."""
        from rf.store.executions import owner

        row = self.cursor().execute(
            "INSERT INTO trigger_slots VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING RETURNING trigger_id",
            [trigger_id, slot, owner(), now]).fetchone()
        return row is not None

    def claim_webhook_signature(self, key: str, expires_at: float) -> bool:
        """Remember an accepted webhook signature until ``expires_at`` (unix seconds): False when
        it was already there (a replay, accepted by this or another server)."""
        row = self.cursor().execute(
            "INSERT INTO webhook_signatures VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING key",
            [key, expires_at]).fetchone()
        return row is not None

    def purge_claims(self, now_unix: float, slots_before: dt.datetime) -> None:
        """Forget expired webhook signatures and slot claims older than ``slots_before``."""
        cur = self.cursor()
        cur.execute("DELETE FROM webhook_signatures WHERE expires_at < ?", [now_unix])
        cur.execute("DELETE FROM trigger_slots WHERE slot < ?", [slots_before])

    def delete_trigger(self, trigger_id: str) -> None:
        cur = self._write_cursor()
        cur.execute("DELETE FROM triggers WHERE id = ?", [trigger_id])
        cur.execute("DELETE FROM trigger_changes WHERE trigger_id = ?", [trigger_id])

    # ------------------------------------------------------------ staged production changes
    def set_trigger_state(self, trigger_id: str, state: dict[str, Any],
                          now: dt.datetime, **extra: Any) -> None:
        """Write a trigger's config fields and ``enabled`` from ``state`` (plus ``extra`` columns)."""
        fields = dict(state)
        if "input" in fields:
            fields["input"] = json.dumps(fields["input"]) if fields["input"] is not None else None
        if "headers" in fields:
            fields["headers"] = json.dumps(fields["headers"] or [])
        fields.update(extra)
        self.update_trigger(trigger_id, now, **fields)

    def trigger_changes(self, cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, dict[str, Any]]:
        """``{trigger id: state}``: changes staged for live production triggers."""
        rows = (cur or self.cursor()).execute("SELECT trigger_id, state FROM trigger_changes").fetchall()
        return {r[0]: json.loads(r[1]) for r in rows}

    def put_trigger_change(self, trigger_id: str, state: dict[str, Any],
                           now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO trigger_changes VALUES (?, ?, ?) ON CONFLICT (trigger_id) DO UPDATE SET "
                    "state = excluded.state, created_at = excluded.created_at",
                    [trigger_id, json.dumps(state, sort_keys=True), now])

    def delete_trigger_change(self, trigger_id: str) -> None:
        cur = self._write_cursor()
        cur.execute("DELETE FROM trigger_changes WHERE trigger_id = ?", [trigger_id])
