"""Credentials: shared by both environments, values only in a keyring.

The keyring is real: the ``keyring`` library's API with rf's file backend,
under a tmp ``XDG_DATA_HOME`` (passed to every subprocess), so the
developer's own keyring and files are never touched.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_rf, run_rf_here
from rf import secrets
from rf.client import LocalBackend, open_local
from rf.errors import NotFound, RfError, UsageError

SECRET = "pa55-w0rd-never-in-the-db"


@pytest.fixture(autouse=True)
def _secrets_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")


@pytest.fixture
def local(ws: Any) -> Iterator[LocalBackend]:
    b = open_local(ws)
    try:
        yield b
    finally:
        b.close()


def _db_bytes(ws: Any) -> bytes:
    data = ws.db_path.read_bytes()
    wal = Path(str(ws.db_path) + ".wal")
    return data + (wal.read_bytes() if wal.exists() else b"")


# ---------------------------------------------------------------- the file backend


def test_file_backend_is_private_and_atomic(tmp_path: Path) -> None:
    kr = secrets.FileKeyring()
    assert kr.path == tmp_path / "xdg" / "rf" / "secrets.json"
    kr.set_password("rf/ws1", "crm-token", SECRET)
    kr.set_password("rf/ws2", "crm-token", "other")
    assert stat.S_IMODE(kr.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(kr.path.parent.stat().st_mode) == 0o700
    assert kr.get_password("rf/ws1", "crm-token") == SECRET
    assert kr.get_password("rf/ws2", "crm-token") == "other"
    assert kr.get_password("rf/ws1", "nope") is None
    kr.delete_password("rf/ws1", "crm-token")
    assert kr.get_password("rf/ws1", "crm-token") is None
    # no temp files left behind; the lock file serialises writers of every workspace
    assert sorted(p.name for p in kr.path.parent.iterdir()) == [".secrets.lock", "secrets.json"]
    from keyring.errors import PasswordDeleteError

    with pytest.raises(PasswordDeleteError):
        kr.delete_password("rf/ws1", "crm-token")
    kr.path.write_text("{broken")
    with pytest.raises(RfError) as info:
        kr.get_password("rf/ws2", "crm-token")
    assert "is not valid JSON" in info.value.message and "broken" not in str(info.value)


def test_file_location_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RF_SECRETS_FILE", str(tmp_path / "elsewhere" / "s.json"))
    store = secrets.SecretStore("ws")
    store.set("a", "1")
    assert (tmp_path / "elsewhere" / "s.json").is_file()
    assert not (tmp_path / "xdg").exists()
    assert "elsewhere/s.json, 0600" in store.storage("a")


def test_file_backend_is_only_a_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without PYTHON_KEYRING_BACKEND, the file is used only when keyring has no real backend."""
    import keyring
    from keyring.backends import fail

    monkeypatch.delenv("PYTHON_KEYRING_BACKEND")
    # keyring never picks rf's file backend by itself (it would chain it behind a real keyring)
    assert secrets.FileKeyring not in {type(k) for k in keyring.backend.get_all_keyring()}
    original = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())  # type: ignore[no-untyped-call]
    try:
        kr, fallback = secrets.backend()
        assert isinstance(kr, secrets.FileKeyring) and fallback
        assert secrets.backend_label().endswith("0600) — no OS keyring found")

        class Real(keyring.backend.KeyringBackend):
            priority = 1  # type: ignore[assignment]

            def get_password(self, service: str, username: str) -> str | None:
                return "from-os"

            def set_password(self, service: str, username: str, password: str) -> None:
                pass

            def delete_password(self, service: str, username: str) -> None:
                pass

        keyring.set_keyring(Real())  # type: ignore[no-untyped-call]
        monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "")  # new cache key: re-resolve
        kr, fallback = secrets.backend()
        assert isinstance(kr, Real) and not fallback
        assert secrets.backend_label() == "OS keyring (test_credentials)"
    finally:
        keyring.set_keyring(original)
        secrets._resolved = None


def test_environment_overrides(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    b = local
    monkeypatch.setenv("RF_SECRET_CI_TOKEN", "from-env")
    assert b.services.credential_secret("ci-token") == "from-env"  # CI: no metadata needed
    b.set_credential("ci-token", SECRET)
    assert b.services.credential_secret("ci-token") == "from-env"
    assert b.get_credential("ci-token").storage == "environment RF_SECRET_CI_TOKEN"
    monkeypatch.delenv("RF_SECRET_CI_TOKEN")
    assert b.services.credential_secret("ci-token") == SECRET
    with pytest.raises(NotFound) as info:
        b.services.credential_secret("ghost")
    assert "credential 'ghost' is not set" in info.value.message
    assert info.value.hint and "rf credentials set ghost" in info.value.hint
    # credential_secret is internal: no route, so no backend exposes it
    from rf import api

    assert "credential_secret" not in api.BY_NAME
    with pytest.raises(AttributeError):
        b.credential_secret  # noqa: B018


# ---------------------------------------------------------------- the service


def test_set_list_rotate_delete(local: LocalBackend, ws: Any) -> None:
    b = local
    created = b.set_credential("crm-token", SECRET, "CRM API")
    assert created.description == "CRM API" and created.storage.startswith("file (")
    assert created.created_at == created.rotated_at
    rotated = b.set_credential("crm-token", SECRET + "-2")
    assert rotated.description == "CRM API" and rotated.rotated_at >= created.rotated_at
    assert b.services.credential_secret("crm-token") == SECRET + "-2"
    b.create_connector("crm", "https://crm.example", auth="bearer", credential="crm-token")
    b.publish_connector("crm", "ada")
    (listed,) = b.list_credentials()
    assert listed.used_by == ["connector crm (production)", "connector crm (staging)"]
    usage = b.credential_usage("crm-token")
    assert usage.exists and usage.production == ["connector crm (production)"]
    assert [(u.kind, u.name, u.env) for u in usage.users] == [("connector", "crm", "production"),
                                                             ("connector", "crm", "staging")]
    deleted = b.delete_credential("crm-token")
    assert deleted.name == "crm-token"
    assert b.list_credentials() == []
    assert secrets.SecretStore(ws.id).stored("crm-token") is None
    assert b.credential_usage("crm-token").exists is False
    with pytest.raises(NotFound):
        b.delete_credential("crm-token")
    b.close()
    assert SECRET.encode() not in _db_bytes(ws)


def test_bad_input_stores_nothing(local: LocalBackend, tmp_path: Path) -> None:
    b = local
    for name, value, expected in [
        ("Bad Name", "x", "invalid credential name"),
        ("ok", "", "needs a non-empty value"),
        ("ok", "two\nlines", "line break"),
        ("ok", "x" * 70_000, "larger than 64 KiB"),
    ]:
        with pytest.raises(UsageError) as info:
            b.set_credential(name, value)
        assert expected in info.value.message
        assert "two" not in info.value.message
    # the keyring refuses the write (its file's directory is not writable): no metadata either
    xdg_rf = tmp_path / "xdg" / "rf"
    xdg_rf.mkdir(parents=True)
    (xdg_rf / "secrets.json").mkdir()  # a directory where the file should be
    with pytest.raises(RfError) as refused:
        b.set_credential("crm-token", SECRET)
    assert SECRET not in str(refused.value)
    assert b.list_credentials() == []


def test_providers_table_is_queried_defensively(local: LocalBackend) -> None:
    """Usage lists LLM providers when a ``providers`` table with a ``credential`` column exists."""
    b = local
    b.set_credential("llm-key", SECRET)
    store = b.services.store
    exists = store.query("SELECT count(*) FROM information_schema.columns WHERE table_name = 'providers'"
                         " AND column_name IN ('name', 'credential')")[0][0] == 2
    if not exists:  # an rf without the providers capability: the query must not fail
        assert b.credential_usage("llm-key").users == []
        store.query("CREATE TABLE providers (name VARCHAR, kind VARCHAR, credential VARCHAR, created_at TIMESTAMP)")
    store.query("INSERT INTO providers (name, kind, credential, created_at) VALUES"
                " ('openai', 'openai', 'llm-key', now()), ('other', 'openai', 'x', now())")
    usage = b.credential_usage("llm-key")
    assert [(u.kind, u.name, u.env) for u in usage.users] == [("provider", "openai", None)]
    assert usage.production == ["provider openai"]


def test_usage_lists_data_sources(local: LocalBackend, ws: Any) -> None:
    """A PostgreSQL data source keeps its password in a credential; data sources are shared, so
    rotating or deleting that credential affects production and usage says so."""
    import datetime as dt

    b = local
    b.set_credential("pg-password", SECRET)
    # Registered as `rf data add` does once the server answered (no PostgreSQL server needed here).
    b.services.store.insert_data_source(name="orders", kind="postgres", location="postgresql://app@db/orders",
                                        credential="pg-password", description="", now=dt.datetime(2026, 11, 26))
    usage = b.credential_usage("pg-password")
    assert [(u.kind, u.name, u.env) for u in usage.users] == [("data source", "orders", None)]
    assert usage.production == ["data source orders"]
    assert b.get_credential("pg-password").used_by == ["data source orders"]
    assert b.credential_usage("other").users == []
    b.close()  # the CLI opens the workspace itself
    out = run_rf("credentials", "usage", "pg-password", cwd=ws.root)
    assert out.returncode == 0 and "data source orders" in out.stdout, out.stdout + out.stderr


# ---------------------------------------------------------------- the CLI


def test_cli_set_list_usage_delete(ws: Any, tmp_path: Path) -> None:
    root = ws.root
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg"), "PYTHON_KEYRING_BACKEND": "rf.secrets.FileKeyring"}
    r = run_rf("credentials", "set", "crm-token", "--from-stdin", "-d", "CRM", cwd=root, input=SECRET + "\n", env=env)
    assert r.returncode == 0, r.stderr
    assert "credential crm-token saved" in r.stderr and "0600" in r.stderr
    secrets_file = tmp_path / "xdg" / "rf" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    stored = json.loads(secrets_file.read_text())
    assert stored == {f"rf/{ws.id}": {"crm-token": SECRET}}  # the trailing newline was not kept

    # no TTY and no --from-stdin: refuse rather than hang
    r = run_rf_here("credentials", "set", "other", cwd=root, env=env)
    assert r.returncode == 2 and "--from-stdin" in r.stderr

    b2 = open_local(ws, wait_s=15)  # the CLI processes above have exited; allow a slow, loaded machine
    try:
        b2.create_connector("crm", "https://crm.example", auth="bearer", credential="crm-token")
        b2.publish_connector("crm", "ada")
    finally:
        b2.close()

    listed = json.loads(run_rf_here("credentials", "list", "--json", cwd=root, env=env).stdout)
    assert [(c["name"], c["description"], c["used_by"]) for c in listed] == [
        ("crm-token", "CRM", ["connector crm (production)", "connector crm (staging)"])]
    assert listed[0]["storage"].startswith("file (") and "value" not in listed[0]
    usage = run_rf_here("credentials", "usage", "crm-token", cwd=root, env=env).stdout
    assert "crm production" in usage and "crm staging" in usage

    # production uses it: rotating or deleting needs --yes (stdin is not a TTY here)
    r = run_rf("credentials", "set", "crm-token", "--from-stdin", cwd=root, input="new-value", env=env)
    assert r.returncode == 2 and "connector crm (production)" in r.stderr and "--yes" in r.stderr
    assert json.loads(secrets_file.read_text())[f"rf/{ws.id}"]["crm-token"] == SECRET
    r = run_rf_here("credentials", "set", "crm-token", "--from-stdin", "--yes", cwd=root, input="new-value", env=env)
    assert r.returncode == 0 and "affects it immediately" in r.stderr
    assert json.loads(secrets_file.read_text())[f"rf/{ws.id}"]["crm-token"] == "new-value"
    r = run_rf_here("credentials", "delete", "crm-token", "--yes", cwd=root, env=env)
    assert r.returncode == 0 and "still referenced by" in r.stderr
    assert json.loads(secrets_file.read_text()) == {}

    everything = "".join(p.read_text(errors="replace") for p in root.rglob("*") if p.is_file()
                         and p.suffix not in (".duckdb", ".wal"))
    assert SECRET not in everything and "new-value" not in everything
    assert SECRET.encode() not in _db_bytes(ws) and b"new-value" not in _db_bytes(ws)
    assert os.environ.get("XDG_DATA_HOME") == str(tmp_path / "xdg")


def test_usage_counts_production_settings_prepared_in_staging(local: LocalBackend, ws: Any) -> None:
    """A credential that production settings prepared in staging name is in use: deleting it
    would break that publish. It is not a production user yet (changing it affects nothing live)."""
    b = local
    b.set_credential("crm-token", SECRET)
    b.set_credential("crm-live", SECRET + "-live")
    b.create_connector("crm", "https://crm.example/sandbox", auth="bearer", credential="crm-token")
    b.publish_connector("crm", "ada")
    b.edit_connector("crm", target="production", base_url="https://crm.example/live", credential="crm-live")
    usage = b.credential_usage("crm-live")
    assert [(u.kind, u.name, u.env, u.prepared) for u in usage.users] == [("connector", "crm", "production", True)]
    assert usage.production == []  # nothing live uses it yet
    (live,) = [c for c in b.list_credentials() if c.name == "crm-live"]
    assert live.used_by == ["connector crm (production settings prepared in staging, not published)"]
    b.publish_release(["connector:crm@production"])
    usage = b.credential_usage("crm-live")
    assert [(u.env, u.prepared) for u in usage.users] == [("production", False)]
    assert usage.production == ["connector crm (production)"]
