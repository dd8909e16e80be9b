"""SQL for connector instances (one per environment and slug), their resources, and the
production settings prepared in staging (``connector_prepared_settings``)."""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from rf.ids import iso
from rf.models import CONNECTOR_CONFIG_FIELDS, CONNECTOR_SETTINGS_FIELDS

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter

#: The configuration columns of ``connectors`` (besides env, slug and times), in table order.
CONFIG_FIELDS = CONNECTOR_CONFIG_FIELDS
#: The per-environment settings columns (``connectors`` and ``connector_prepared_settings``).
SETTINGS_FIELDS = CONNECTOR_SETTINGS_FIELDS
RESOURCE_FIELDS = ("slug", "name", "description", "method", "path", "params_schema", "mock_response")


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


class ConnectorsMixin:
    """Mixed into :class:`rf.store.Store`."""

    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def _write_cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    # ------------------------------------------------------------ reading
    @staticmethod
    def _connector(row: tuple[Any, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {"env": row[0], "slug": row[1]}
        out.update(zip(CONFIG_FIELDS, row[2:12], strict=True))
        out["headers"] = json.loads(out["headers"])
        out["created_at"], out["updated_at"] = iso(row[12]), iso(row[13])
        return out

    @staticmethod
    def _resource(row: tuple[Any, ...]) -> dict[str, Any]:
        out = dict(zip(RESOURCE_FIELDS, row, strict=True))
        out["params_schema"] = json.loads(out["params_schema"]) if out["params_schema"] is not None else None
        out["mock_response"] = json.loads(out["mock_response"]) if out["mock_response"] is not None else None
        return out

    def connector_rows(self, env: str, slug: str | None = None,
                       cur: duckdb.DuckDBPyConnection | None = None) -> list[dict[str, Any]]:
        """Instances of one environment (with their resources), by slug."""
        cur = cur or self.cursor()
        sql = f"SELECT env, slug, {', '.join(CONFIG_FIELDS)}, created_at, updated_at FROM connectors WHERE env = ?"
        params: list[Any] = [env]
        if slug is not None:
            sql += " AND slug = ?"
            params.append(slug)
        rows = [self._connector(r) for r in cur.execute(sql + " ORDER BY slug", params).fetchall()]
        if not rows:
            return rows
        res_sql = f"SELECT connector, {', '.join(RESOURCE_FIELDS)} FROM connector_resources WHERE env = ?"
        res_params: list[Any] = [env]
        if slug is not None:
            res_sql += " AND connector = ?"
            res_params.append(slug)
        by_slug: dict[str, list[dict[str, Any]]] = {}
        for r in cur.execute(res_sql + " ORDER BY connector, slug", res_params).fetchall():
            by_slug.setdefault(r[0], []).append(self._resource(r[1:]))
        for row in rows:
            row["resources"] = by_slug.get(row["slug"], [])
        return rows

    def connector_row(self, env: str, slug: str, cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, Any] | None:
        rows = self.connector_rows(env, slug, cur)
        return rows[0] if rows else None

    def connector_slugs(self) -> dict[str, set[str]]:
        """``{env: {slug, ...}}`` of every instance."""
        out: dict[str, set[str]] = {"staging": set(), "production": set()}
        for env, slug in self.cursor().execute("SELECT env, slug FROM connectors").fetchall():
            out.setdefault(env, set()).add(slug)
        return out

    def connectors_using_credential(self, name: str) -> list[tuple[str, str]]:
        """``(env, slug)`` of every instance whose auth uses credential ``name``."""
        rows = self.cursor().execute(
            "SELECT env, slug FROM connectors WHERE credential = ? ORDER BY env, slug", [name]
        ).fetchall()
        return [(str(e), str(s)) for e, s in rows]

    def prepared_connectors_using_credential(self, name: str) -> list[str]:
        """Slugs whose production settings prepared in staging use credential ``name``."""
        rows = self.cursor().execute(
            "SELECT slug FROM connector_prepared_settings WHERE credential = ? ORDER BY slug", [name]
        ).fetchall()
        return [str(r[0]) for r in rows]

    # ------------------------------------------------------------ writing (inside a transaction)
    def upsert_connector(self, env: str, slug: str, config: dict[str, Any],
                         now: dt.datetime) -> None:
        cur = self._write_cursor()
        values = [json.dumps(config["headers"], sort_keys=True) if f == "headers" else config[f]
                  for f in CONFIG_FIELDS]
        cur.execute(
            f"""INSERT INTO connectors VALUES (?, ?, {', '.join('?' for _ in CONFIG_FIELDS)}, ?, ?)
                ON CONFLICT (env, slug) DO UPDATE SET
                {', '.join(f'{f} = excluded.{f}' for f in CONFIG_FIELDS)}, updated_at = excluded.updated_at""",
            [env, slug, *values, now, now],
        )

    def touch_connector(self, env: str, slug: str, now: dt.datetime) -> None:
        cur = self._write_cursor()
        cur.execute("UPDATE connectors SET updated_at = ? WHERE env = ? AND slug = ?", [now, env, slug])

    def delete_connector_rows(self, env: str, slug: str) -> None:
        cur = self._write_cursor()
        cur.execute("DELETE FROM connector_resources WHERE env = ? AND connector = ?", [env, slug])
        cur.execute("DELETE FROM connectors WHERE env = ? AND slug = ?", [env, slug])

    def upsert_resource(self, env: str, connector: str,
                        resource: dict[str, Any]) -> None:
        cur = self._write_cursor()
        values = [_json_or_none(resource[f]) if f in ("params_schema", "mock_response") else resource[f]
                  for f in RESOURCE_FIELDS]
        cur.execute(
            f"""INSERT INTO connector_resources VALUES (?, ?, {', '.join('?' for _ in RESOURCE_FIELDS)})
                ON CONFLICT (env, connector, slug) DO UPDATE SET
                {', '.join(f'{f} = excluded.{f}' for f in RESOURCE_FIELDS[1:])}""",
            [env, connector, *values],
        )

    def delete_resource_row(self, env: str, connector: str, slug: str) -> None:
        cur = self._write_cursor()
        cur.execute("DELETE FROM connector_resources WHERE env = ? AND connector = ? AND slug = ?",
                    [env, connector, slug])

    def replace_connector(self, env: str, slug: str, content: dict[str, Any],
                          now: dt.datetime) -> None:
        """Make instance ``(env, slug)`` exactly ``content`` (config + resources), keeping created_at."""
        cur = self._write_cursor()
        created = cur.execute("SELECT created_at FROM connectors WHERE env = ? AND slug = ?", [env, slug]).fetchone()
        self.delete_connector_rows(env, slug)
        self.upsert_connector(env, slug, content, now)
        if created is not None:
            cur.execute("UPDATE connectors SET created_at = ? WHERE env = ? AND slug = ?", [created[0], env, slug])
        for resource in content["resources"]:
            self.upsert_resource(env, slug, resource)

    # ------------------------------------------------------------ published snapshots
    def put_connector_snapshot(self, content_hash: str, content: dict[str, Any]) -> None:
        cur = self._write_cursor()
        cur.execute("INSERT INTO connector_snapshots VALUES (?, ?) ON CONFLICT (hash) DO NOTHING",
                    [content_hash, json.dumps(content, sort_keys=True)])

    def get_connector_snapshot(self, content_hash: str,
                               cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, Any] | None:
        row = (cur or self.cursor()).execute(
            "SELECT content FROM connector_snapshots WHERE hash = ?", [content_hash]).fetchone()
        return json.loads(row[0]) if row else None

    # ------------------------------------------------------------ per-environment settings
    def connector_configs(self, cur: duckdb.DuckDBPyConnection | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """``{(env, slug): config}`` of every instance (no resources)."""
        rows = (cur or self.cursor()).execute(
            f"SELECT env, slug, {', '.join(CONFIG_FIELDS)}, created_at, updated_at FROM connectors").fetchall()
        out = {}
        for r in rows:
            row = self._connector(r)
            out[(row["env"], row["slug"])] = row
        return out

    def prepared_settings(self, slug: str | None = None,
                          cur: duckdb.DuckDBPyConnection | None = None) -> dict[str, dict[str, Any]]:
        """``{slug: settings}``: production settings prepared in staging (published as a release item)."""
        sql = f"SELECT slug, {', '.join(SETTINGS_FIELDS)} FROM connector_prepared_settings"
        params: list[Any] = []
        if slug is not None:
            sql += " WHERE slug = ?"
            params.append(slug)
        out = {}
        for r in (cur or self.cursor()).execute(sql, params).fetchall():
            settings = dict(zip(SETTINGS_FIELDS, r[1:], strict=True))
            settings["headers"] = json.loads(settings["headers"])
            out[r[0]] = settings
        return out

    def put_prepared_settings(self, slug: str, settings: dict[str, Any],
                              now: dt.datetime) -> None:
        cur = self._write_cursor()
        values = [json.dumps(settings["headers"], sort_keys=True) if f == "headers" else settings[f]
                  for f in SETTINGS_FIELDS]
        cur.execute(
            f"""INSERT INTO connector_prepared_settings VALUES (?, {', '.join('?' for _ in SETTINGS_FIELDS)}, ?)
                ON CONFLICT (slug) DO UPDATE SET
                {', '.join(f'{f} = excluded.{f}' for f in SETTINGS_FIELDS)}, updated_at = excluded.updated_at""",
            [slug, *values, now],
        )

    def set_connector_settings(self, env: str, slug: str, settings: dict[str, Any],
                               now: dt.datetime) -> None:
        """Change only the settings columns of instance ``(env, slug)`` (its resources stay)."""
        cur = self._write_cursor()
        values = [json.dumps(settings["headers"], sort_keys=True) if f == "headers" else settings[f]
                  for f in SETTINGS_FIELDS]
        cur.execute(f"UPDATE connectors SET {', '.join(f'{f} = ?' for f in SETTINGS_FIELDS)}, updated_at = ? "
                    "WHERE env = ? AND slug = ?", [*values, now, env, slug])
