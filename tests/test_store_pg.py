"""The PostgreSQL store (rf/store/pg*.py) against a real PostgreSQL server (tests/pgserver.py):
settings, errors, migrations, the SQL translation, the COPY writer, the methods rewritten for
PostgreSQL (sessions, memory, knowledge-base search) compared with DuckDB's answers.

The contract suites (tests/test_contract.py, tests/test_contract_routes.py) run every route on
both stores; this file covers what they cannot see."""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pgserver import PASSWORD, PASSWORD_ENV, USER

from conftest import run_rf, use_store
from rf.config import init_workspace, load_workspace, shown_store_url, store_settings
from rf.errors import StoreError, UsageError, WorkspaceError
from rf.ids import iso, new_id, utcnow
from rf.models import Execution
from rf.store import Store, describe_store, open_store
from rf.store.migrations import MIGRATIONS, SCHEMA_VERSION
from rf.store.pg import PgStore
from rf.store.pg_sql import PG_MIGRATIONS, TranslationError, pg_statements, translate


def _ex(env: str = "staging", agent: str = "a", **kw: Any) -> Execution:
    now = iso(utcnow())
    return Execution(id=new_id("ex"), env=env, agent=agent, commit="c1", source="test", status="succeeded",
                     input={"x": 1}, output={"y": 2}, started_at=now, ended_at=now, duration_ms=1.5, **kw)


@pytest.fixture(scope="module")
def pg_url(pg_databases: Any) -> str:
    """One migrated database for this module (CREATE DATABASE ... TEMPLATE)."""
    return str(pg_databases.new("store"))


@pytest.fixture
def store(pg_url: str) -> Iterator[PgStore]:
    with PgStore.open(pg_url, password_env=PASSWORD_ENV) as s:
        yield s


# ---------------------------------------------------------------- migrations and translation

def test_both_stores_have_the_same_schema_versions() -> None:
    """One list of versions: a migration added for DuckDB needs its PostgreSQL entry (None: the
    same statements with types translated) in the same commit."""
    assert len(PG_MIGRATIONS) == len(MIGRATIONS) == SCHEMA_VERSION
    for version in range(1, SCHEMA_VERSION + 1):
        statements = pg_statements(version)
        assert statements, version
        assert not any(w in s for s in statements for w in ("QUALIFY", " BLOB", "DOUBLE NOT", "json_valid"))


def test_the_postgresql_store_has_every_mixin_of_the_duckdb_one() -> None:
    """PgStore lists its bases (PgOverrides first): a mixin added to Store must be added there too."""
    assert set(Store.__bases__) - set(PgStore.__mro__) == set()
    assert PgStore.__mro__[1].__name__ == "PgOverrides"


def test_translate_placeholders_literals_and_upserts() -> None:
    assert translate("SELECT ? , 'a?b''%' , \"q?\" , x % 2 FROM t WHERE y = $name") == \
        "SELECT %s , 'a?b''%%' , \"q?\" , x %% 2 FROM t WHERE y = %(name)s"
    assert translate("INSERT OR REPLACE INTO resource_uses (kind, name, env, agent, last_used_at) VALUES (?, ?, ?, ?, ?)") \
        == ("INSERT INTO resource_uses (kind, name, env, agent, last_used_at) VALUES (%s, %s, %s, %s, %s)"
            " ON CONFLICT (kind, name, env, agent) DO UPDATE SET last_used_at = excluded.last_used_at")
    assert translate("INSERT OR IGNORE INTO blobs VALUES (?, ?, ?)") == \
        "INSERT INTO blobs VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
    assert translate("SELECT rowid, strlen(x) FROM t") == "SELECT ctid, octet_length(x) FROM t"
    with pytest.raises(TranslationError, match="no primary key"):
        translate("INSERT OR REPLACE INTO executions (id) VALUES (?)")


def test_a_fresh_database_is_migrated_and_a_newer_one_refused(pg_databases: Any) -> None:
    url = pg_databases.empty()
    with PgStore.open(url, password_env=PASSWORD_ENV) as store:
        assert store.schema_version == SCHEMA_VERSION
        tables = {r[0] for r in store.query("SELECT table_name FROM information_schema.tables"
                                            " WHERE table_schema = 'public'")}
        assert {"executions", "span_batches", "session_turns", "audit_log", "eval_runs"} <= tables
        assert "spans" not in tables and "session_messages" not in tables  # v16 dropped them
        store.cursor().execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    with pytest.raises(StoreError) as info:
        PgStore.open(url, password_env=PASSWORD_ENV)
    assert "newer rf" in info.value.message and f"v{SCHEMA_VERSION + 1}" in info.value.message
    assert "upgrade rf" in (info.value.hint or "")


# ---------------------------------------------------------------- settings and errors

def test_store_settings_and_the_shown_url(tmp_path: Path) -> None:
    assert store_settings({}, "rf.toml", {}) == (None, None)
    url = "postgresql://ada@db.internal:5432/rf"
    assert store_settings({"store": {"url": url}}, "rf.toml", {}) == (url, None)
    assert store_settings({"store": {"url": url, "password_env": "PW"}}, "rf.toml",
                          {"RF_STORE_URL": "postgres://b@h/x"}) == ("postgres://b@h/x", "PW")
    with pytest.raises(WorkspaceError, match=r"must start with postgresql:// \(not 'mysql'\)") as info:
        store_settings({"store": {"url": "mysql://root:hunter2@h/db"}}, "rf.toml", {})
    assert "hunter2" not in info.value.message + (info.value.hint or "")
    with pytest.raises(WorkspaceError, match="password_env must be the name"):
        store_settings({"store": {"url": url, "password_env": "not a name"}}, "rf.toml", {})
    with pytest.raises(WorkspaceError, match="no url"):
        store_settings({"store": {"password_env": "PW"}}, "rf.toml", {})
    with pytest.raises(WorkspaceError, match="unknown key 'uri'"):
        root = init_workspace(tmp_path / "w").root
        (root / "rf.toml").write_text((root / "rf.toml").read_text() + '\n[store]\nuri = "x"\n')
        load_workspace(root)
    assert shown_store_url("postgresql://ada:p%40ss@h:5/db?sslmode=require&password=x") == \
        "postgresql://ada:***@h:5/db?sslmode=require&password=***"
    assert shown_store_url(url) == url


def test_clear_errors_unreachable_wrong_password_missing_variable(pg_databases: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pgserver import free_port

    with pytest.raises(StoreError) as info:
        PgStore.open(f"postgresql://{USER}@127.0.0.1:{free_port()}/x", password_env=PASSWORD_ENV)
    assert "cannot reach the PostgreSQL store" in info.value.message and "[store] url" in (info.value.hint or "")
    url = pg_databases.url("postgres")
    monkeypatch.setenv("WRONG_PW", "not-" + PASSWORD)
    with pytest.raises(StoreError) as info:
        PgStore.open(url, password_env="WRONG_PW")
    assert "refused the password" in info.value.message and "PGPASSWORD" in (info.value.hint or "")
    assert PASSWORD not in info.value.message
    monkeypatch.delenv("UNSET_PW", raising=False)
    with pytest.raises(StoreError, match="UNSET_PW, which is not set"):
        PgStore.open(url, password_env="UNSET_PW")
    with pytest.raises(StoreError) as info:
        PgStore.open(pg_databases.url("no_such_db"), password_env=PASSWORD_ENV)
    assert "does not exist" in info.value.message and "createdb" in (info.value.hint or "")


def test_rf_status_names_the_store_without_the_password(pg_databases: Any, tmp_path: Path) -> None:
    """The whole path: rf.toml's [store] url (here with the password in it) → open_store → rf status."""
    ws = init_workspace(tmp_path / "ws")
    url = pg_databases.new().replace(f"{USER}@", f"{USER}:{PASSWORD}@")
    (ws.root / "rf.toml").write_text((ws.root / "rf.toml").read_text() + f'\n[store]\nurl = "{url}"\n')
    r = run_rf("status", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("store"))
    assert f"postgresql://{USER}:***@127.0.0.1" in line and "vectors: float4-bytea" in line
    assert PASSWORD not in r.stdout + r.stderr
    assert not (ws.root / ".rf" / "rf.duckdb").exists()
    r = run_rf("status", "--json", cwd=ws.root, env={"RF_STORE_URL": "mysql://x@h/db"})
    assert r.returncode != 0 and "RF_STORE_URL: [store] url must start with postgresql://" in r.stderr


# ---------------------------------------------------------------- the store's basics

def test_transactions_roll_back_and_reads_see_commits(store: PgStore) -> None:
    with pytest.raises(RuntimeError), store.transaction() as cur:
        cur.execute("INSERT INTO agents VALUES ('x', '', ?, ?)", [utcnow(), utcnow()])
        raise RuntimeError("boom")
    assert store.agent_rows("x") == []
    with pytest.raises(RuntimeError, match="outside a unit of work"):
        store.upsert_agent("x", "first", utcnow())
    with store.unit_of_work() as repos:
        repos.agents.upsert_agent("x", "first", utcnow())
        repos.agents.upsert_agent("x", "second", utcnow())  # ON CONFLICT ... DO UPDATE
    seen: list[Any] = []
    t = threading.Thread(target=lambda: seen.append(store.agent_rows("x")))  # another thread, its own connection
    t.start()
    t.join()
    assert seen[0][0]["description"] == "second"
    with pytest.raises(StoreError, match="database error"), store.transaction() as cur:
        cur.execute("INSERT INTO agents VALUES ('x', '', ?, ?)", [utcnow(), utcnow()])  # duplicate key
    assert store.query_one("SELECT count(*) FROM agents WHERE name = 'x'") == (1,)


def test_writer_copies_rows_exactly_and_concurrently(store: PgStore) -> None:
    texts = ["plain", "", "quotes \" and \\ backslash", "line\nbreak\ttab\r", "snow ☃ and emoji 😀", "null",
             "tab\\t literal", "x" * 200_000]
    times = [dt.datetime(2026, 11, 26, 8, 0, 0), dt.datetime(2026, 11, 26, 8, 0, 0, 123456),
             dt.datetime(1999, 12, 31, 23, 59, 59, 999999)]
    memory = [("copy", f"k{i}", 2**62 + i, text, "a", None if i % 2 else f"ex_{i}", times[i % 3])
              for i, text in enumerate(texts)]
    memory.append(("copy", "deleted", -(2**63) + 1, None, None, None, times[0]))
    spans = [("copy", "t1", "e1", "a", 0, 2**63 - 1, 2**31 - 1, "[]"), ("copy", "t2", "e2", "a", -5, 7, 0, texts[3])]
    store.writer.check("memory", memory)
    store.writer.put_many("memory", memory)
    store.writer.put_many("span_batches", spans)

    def work() -> None:
        for _ in range(100):
            store.record_execution(_ex("copyenv"))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.flush()
    assert sorted(store.query("SELECT * FROM memory WHERE env = 'copy'"), key=repr) == sorted(memory, key=repr)
    assert sorted(store.query("SELECT * FROM span_batches WHERE env = 'copy'")) == sorted(spans)
    assert store.count_executions("copyenv") == 400
    one = store.list_executions("copyenv", limit=1, full=True)[0]
    assert one.input == {"x": 1} and one.output == {"y": 2} and one.duration_ms == 1.5


def test_writer_refuses_nul_and_drops_a_failing_group_only(store: PgStore) -> None:
    """PostgreSQL text cannot hold NUL: refused where it is queued (the caller's error), not in COPY.
    A row the checks let through but PostgreSQL refuses drops its group alone."""
    with pytest.raises(UsageError, match="NUL character"):
        store.writer.check("memory", [("staging", "k", 1, "a\x00b", "a", None, utcnow())])
    store.writer.begin_group()
    store.writer.put("memory", ("groupfail", None, 1, '"v"', "a", None, utcnow()))  # key is NOT NULL
    store.record_execution(ex := _ex("groupfail"))
    group = store.writer.end_group()
    store.record_execution(other := _ex("groupfail"))  # another group of the same batch
    store.flush()
    with pytest.raises(StoreError, match=r"(?i)null"):
        store.writer.wait(group)
    assert store.get_execution(ex.id) is None and store.get_execution(other.id) is not None
    assert store.writer.failed_groups >= 1


def test_running_markers_latest_wins(store: PgStore) -> None:
    """The QUALIFY of the latest running marker, as PostgreSQL runs it (rf.store.pg_sql.FRAGMENTS)."""
    t0 = dt.datetime(2026, 1, 1, 8, 0, 0)
    eid = new_id("ex")
    rows = [(eid, "markers", "a", "c1", "test", None, "{}", t0, None, t0, "other:1", None, None),
            (eid, "markers", "a", "c1", "test", None, "{}", t0, t0 + dt.timedelta(seconds=2),
             t0 + dt.timedelta(seconds=3), "other:1", None, None)]
    store.writer.put_many("running_executions", rows)
    store.flush()
    assert store.recover_interrupted() >= 1
    ex = store.get_execution(eid)
    assert ex is not None and ex.status == "interrupted" and ex.queued_ms == 2000.0
    assert store.query("SELECT count(*) FROM running_executions WHERE id = ?", [eid]) == [(0,)]


# ---------------------------------------------------------------- rewritten methods: same answers as DuckDB

def _fill_sessions_and_memory(store: Any) -> None:
    base = 1_790_000_000_000_000
    for turn in range(5):
        messages = [["user", {"n": turn}, base + turn * 10], ["assistant", f"reply {turn}", base + turn * 10 + 1]]
        store.queue_session_turn(("staging", "bot", "s1", turn * 2, 2, f"ex_{turn}",
                                  dt.datetime(2026, 1, 1, 8, turn), dt.datetime(2026, 1, 1, 8, turn, 1),
                                  json.dumps(messages)))
    store.queue_session_turn(("staging", "bot", "s2", 0, 1, None, dt.datetime(2026, 1, 2), dt.datetime(2026, 1, 2),
                              json.dumps([["user", "hello", base]])))
    now = dt.datetime(2026, 1, 1)
    store.queue_memory([("staging", "a/1", 1, '"one"', "bot", None, now), ("staging", "a/1", 2, '"uno"', "bot", None, now),
                        ("staging", "a/2", 3, '"two"', "bot", None, now), ("staging", "a/2", 4, None, "bot", None, now),
                        ("staging", "b", 5, '{"x": 1}', "bot", None, now)])
    store.flush()


def _session_answers(store: Any) -> dict[str, Any]:
    out = {"messages": store.session_messages("staging", "s1", "bot"),
           "newest3": store.session_messages("staging", "s1", "bot", limit=3),
           "newest1": store.session_messages("staging", "s1", "bot", limit=1),
           "sessions": store.list_sessions("staging"), "items": store.memory_items("staging"),
           "prefix": store.memory_items("staging", "a/", values=False),
           "value": store.memory_value("staging", "a/1")[0]}
    out["compacted"] = store.compact_memory()
    out["after"] = store.memory_items("staging")
    out["deleted"] = store.delete_memory("staging", prefix="a/")
    out["left"] = store.memory_items("staging")
    return out


def test_sessions_and_memory_answer_as_on_duckdb(pg_databases: Any, tmp_path: Path) -> None:
    with Store.open(tmp_path / "rf.duckdb") as duck, PgStore.open(pg_databases.new(), password_env=PASSWORD_ENV) as pg:
        _fill_sessions_and_memory(duck)
        _fill_sessions_and_memory(pg)
        expected, got = _session_answers(duck), _session_answers(pg)
    assert got == expected
    assert len(got["newest3"]) == 3 and got["compacted"] == 3 and got["deleted"] == ["a/1"]


def test_knowledge_bases_on_postgresql(pg_databases: Any, tmp_path: Path) -> None:
    """tests/test_kb.py's upload/search/filter test, run on PostgreSQL; then the same searches on
    both stores rank the same hits with the same scores."""
    import test_kb

    from rf.client import open_local

    backends = {}
    for kind in ("duckdb", "postgresql"):
        ws = init_workspace(tmp_path / kind)
        use_store(ws.root, kind, pg_databases)
        backends[kind] = open_local(load_workspace(ws.root))
    try:
        test_kb.test_upload_unchanged_changed_and_search(backends["postgresql"])
        for b in backends.values():
            b.create_kb("same")
            b.kb_upload("same", test_kb.DOCS, {"lang": "en"})
        for query, filters in (("refund to my card", None), ("shipping", {"path": "faq/*.txt"}),
                               ("password", {"type": "json"}), ("gadget price", {"lang": ["en", "de"]})):
            duck, pg = (b.search_kb("same", query, k=5, filter=filters).hits for b in backends.values())
            assert [h.path for h in pg] == [h.path for h in duck], query
            for a, b in zip(duck, pg, strict=True):
                assert (a.chunk, a.text) == (b.chunk, b.text)
                assert abs(a.score - b.score) < 1e-4 and abs(a.vector_score - b.vector_score) < 1e-4
                assert a.lexical_score == pytest.approx(b.lexical_score, abs=1e-6)
        status = backends["postgresql"].status()
        assert status.store.startswith("postgresql postgresql://") and "float4-bytea" in status.store
        assert backends["duckdb"].status().store.startswith("duckdb ")
    finally:
        for b in backends.values():
            b.close()


def test_open_store_chooses_by_the_workspace(pg_databases: Any, tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    with open_store(ws) as duck:
        assert isinstance(duck, Store) and describe_store(duck).startswith("duckdb ")
    use_store(ws.root, "postgresql", pg_databases)
    with open_store(load_workspace(ws.root)) as pg:
        assert isinstance(pg, PgStore) and pg.store_bytes() > 0
