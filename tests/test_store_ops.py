"""Running on PostgreSQL, as a team does (a real server: tests/pgserver.py):

- the PostgreSQL store's connection pool (rf/store/pg_pool.py): many threads share a few
  connections, none is left behind, a busy pool waits then names ``[store] max_connections``,
  connections the server dropped are replaced without an error, a server out of connections
  says so;
- ``rf status`` and ``rf store info`` list the live ``rf serve`` replicas of the store;
- ``rf store copy --to``: a workspace's DuckDB store copied into an empty PostgreSQL database
  reads back the same through the services; a database that holds anything is refused.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgserver import PASSWORD, PASSWORD_ENV, PgDatabases, postgres_server

from conftest import run_rf, write_agent
from rf.client import open_local
from rf.config import init_workspace, load_workspace
from rf.errors import StoreError, WorkspaceError
from rf.ids import utcnow
from rf.models import to_dict
from rf.store.pg import PgStore


def _admin(dbs: PgDatabases) -> psycopg.Connection[Any]:
    return psycopg.connect(dbs.url("postgres"), password=PASSWORD, autocommit=True)


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _connections(dbs: PgDatabases, url: str, app: str | None = "rf") -> int:
    """Open connections to *url*'s database (those named *app*; None: all)."""
    with _admin(dbs) as con:
        row = con.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
                          " AND (%s::text IS NULL OR application_name = %s)", [_name(url), app, app]).fetchone()
    return int(row[0]) if row else 0


def _wait_until(check: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# ---------------------------------------------------------------- the connection pool

def test_many_short_lived_threads_share_a_bounded_pool_and_leave_no_connection(pg_databases: PgDatabases) -> None:
    """100 threads in waves of 25 that start together, each reading and writing: the store opens
    at most its pool's connections (4 of max_connections = 6), reuses them from wave to wave,
    and none stays open once the store is closed (a connection per thread opened 25 or more)."""
    url = pg_databases.new("pool")
    store = PgStore.open(url, password_env=PASSWORD_ENV, max_connections=6)
    seen: list[int] = []
    try:
        for wave in range(4):
            barrier = threading.Barrier(25)
            errors: list[BaseException] = []

            def work(i: int, wave: int = wave, barrier: threading.Barrier = barrier,
                     errors: list[BaseException] = errors) -> None:
                try:
                    barrier.wait()
                    for _ in range(5):
                        store.agent_rows()
                        store.count_executions("staging")
                    with store.unit_of_work() as repos:
                        repos.agents.upsert_agent(f"a{wave}-{i}", "", utcnow())
                except BaseException as exc:
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(i,)) for i in range(25)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            seen.append(_connections(pg_databases, url))
        assert len(store.agent_rows()) == 100
        stats = store.pool_stats()
        assert stats["size"] == 4 and stats["opened"] <= 4 and stats["busy"] == 0
        assert max(seen) <= 4 and _connections(pg_databases, url, "rf-writer") == 1
    finally:
        store.close()
    assert _connections(pg_databases, url, None) == 0


def test_a_busy_pool_waits_then_names_the_setting(pg_databases: PgDatabases) -> None:
    url = pg_databases.new("busy")
    store = PgStore.open(url, password_env=PASSWORD_ENV, max_connections=4, pool_wait_s=0.3)  # a pool of 2
    outcomes: list[str] = []

    def sleep() -> None:
        try:
            store.query("SELECT pg_sleep(60)")
            outcomes.append("slept")
        except StoreError as exc:
            outcomes.append(exc.message)

    sleepers = [threading.Thread(target=sleep) for _ in range(2)]
    try:
        for t in sleepers:
            t.start()

        def sleeping() -> list[Any]:
            with _admin(pg_databases) as con:
                return con.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active'"
                                   " AND query LIKE 'SELECT pg_sleep(60)%%'", [_name(url)]).fetchall()

        _wait_until(lambda: len(sleeping()) == 2, "both connections to be busy")
        with pytest.raises(StoreError) as info:
            store.query("SELECT 1")
        assert "all 2 connections of rf's PostgreSQL pool stayed busy" in info.value.message
        assert "[store] max_connections (now 4)" in (info.value.hint or "")
        with _admin(pg_databases) as con:
            con.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                        " AND query LIKE 'SELECT pg_sleep(60)%%'", [_name(url)])
        for t in sleepers:
            t.join(timeout=30)
        assert len(outcomes) == 2 and all("cancelled the statement: canceling statement" in o for o in outcomes)
        assert store.query("SELECT 1") == [(1,)]  # the cancelled statements' connections serve again
    finally:
        store.close()


def test_connections_the_server_dropped_are_replaced_without_an_error(pg_databases: PgDatabases) -> None:
    """A restarted server (here: every rf connection terminated) costs no read and no write."""
    url = pg_databases.new("dropped")
    store = PgStore.open(url, password_env=PASSWORD_ENV, max_connections=8)
    try:
        threads = [threading.Thread(target=lambda: [store.agent_rows() for _ in range(20)]) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        opened = store.pool_stats()["opened"]
        assert opened >= 2
        for _ in range(2):  # once before a read, once before a write
            with _admin(pg_databases) as con:
                con.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s"
                            " AND application_name = 'rf'", [_name(url)])
            _wait_until(lambda: _connections(pg_databases, url) == 0, "the connections to end")
            if _ == 0:
                assert store.agent_rows() == []
            else:
                with store.unit_of_work() as repos:
                    repos.agents.upsert_agent("after", "restart", utcnow())
        assert [a["name"] for a in store.agent_rows()] == ["after"]
        assert store.pool_stats()["opened"] > opened
    finally:
        store.close()


def test_a_server_out_of_connections_says_what_to_change() -> None:
    """PostgreSQL's own limit (here 6 connections): the store's error names both settings."""
    with postgres_server(max_connections=6) as server:
        dbs = PgDatabases(server)
        url = dbs.new("full")
        store = PgStore.open(url, password_env=PASSWORD_ENV, max_connections=20)  # 2 open: the pool's, the writer's
        holders = [psycopg.connect(url, password=PASSWORD) for _ in range(3)]  # 5 of 6
        errors: list[StoreError] = []

        def sleep() -> None:
            try:
                store.query("SELECT pg_sleep(60)")
            except StoreError as exc:
                errors.append(exc)

        threads = [threading.Thread(target=sleep) for _ in range(3)]  # 2 sleep (the 6th connection), 1 cannot
        try:
            for t in threads:
                t.start()
            _wait_until(lambda: bool(errors), "a connection to be refused")
            assert len(errors) == 1 and "has no connection left for rf" in errors[0].message
            assert "[store] max_connections" in (errors[0].hint or "") and "server's max_connections" in (
                errors[0].hint or "")
        finally:
            for h in holders:
                h.close()
            with _admin(dbs) as con:
                con.execute("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'")
            for t in threads:
                t.join(timeout=30)
            store.close()


def test_max_connections_in_rf_toml(pg_databases: PgDatabases, tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    toml = root / "rf.toml"
    base = toml.read_text()
    url = pg_databases.new("toml")
    toml.write_text(base + pg_databases.toml(url) + "max_connections = 7\n")
    ws = load_workspace(root)
    assert ws.store_max_connections == 7
    b = open_local(ws)
    try:
        store: Any = b.services.store
        assert store.max_connections == 7 and store.pool_stats()["size"] == 5
    finally:
        b.close()
    for bad in ("3", "10001", '"20"', "true", "2.5"):
        toml.write_text(base + pg_databases.toml(url) + f"max_connections = {bad}\n")
        with pytest.raises(WorkspaceError, match=r"\[store\] max_connections must be a whole number from 4"):
            load_workspace(root)
    toml.write_text(base + "\n[store]\nmax_connections = 8\n")
    with pytest.raises(WorkspaceError, match="max_connections is set but there is no url"):
        load_workspace(root)
    toml.write_text(base + pg_databases.toml(url) + "max_connection = 8\n")
    r = run_rf("status", cwd=root)
    assert r.returncode != 0 and "max_connection" in r.stderr and "max_connections" in r.stderr


# ---------------------------------------------------------------- replicas in rf status

def _services_fill_replicas() -> bool:
    """Whether Services.status() itself fills Status.replicas from the store (then a server's
    status, over HTTP, carries them too)."""
    from rf.models import Replica
    from rf.services import Services
    from rf.store import Store

    store = Store.open(None)
    store.live_replicas = lambda: [Replica(id="probe", url="u", host="h", pid=1)]  # type: ignore[method-assign]
    services = Services(store, None)
    try:
        return bool(services.status().replicas)
    finally:
        services.close()
        store.close()


def test_rf_status_lists_the_live_replicas(pg_databases: PgDatabases, tmp_path: Path) -> None:
    """Two real `rf serve` on one database: `rf status` (and `rf store info`) of an operator's
    workspace pointed at the same store lists both, then the one left after the other stopped."""
    from test_replicas import _start, _wait_info

    url = pg_databases.new("status")
    root, ops = (init_workspace(tmp_path / name).root for name in ("served", "ops"))
    for r in (root, ops):
        (r / "rf.toml").write_text((r / "rf.toml").read_text() + pg_databases.toml(url))
    procs = [_start(root)]
    try:
        servers = [_wait_info(root, procs[0])]
        procs.append(_start(root))
        servers.append(_wait_info(root, procs[1]))
        r = run_rf("status", "--json", cwd=ops)
        assert r.returncode == 0, r.stderr
        replicas = json.loads(r.stdout)["replicas"]
        assert sorted((x["url"], x["pid"]) for x in replicas) == sorted((s.url, s.pid) for s in servers)
        assert {x["host"] for x in replicas} == {socket.gethostname()}
        assert all(x["heartbeat_age_s"] >= 0 and x["heartbeat_at"].endswith("Z") for x in replicas)
        text = run_rf("status", cwd=ops).stdout
        assert "replicas   2 rf servers on this store" in text
        assert all(f"{s.url}  host {socket.gethostname()}  pid {s.pid}" in text for s in servers)
        info = json.loads(run_rf("store", "info", "--json", cwd=ops).stdout)
        assert info["kind"] == "postgresql" and len(info["replicas"]) == 2 and info["max_connections"] == 20
        assert {"name": "replicas", "rows": 2} in info["tables"]
        if _services_fill_replicas():  # a server's own status (over HTTP) carries them too
            served = json.loads(run_rf("status", "--json", cwd=root).stdout)
            assert served["backend"] == "http" and len(served["replicas"]) == 2
        servers[1].stop()  # a clean stop leaves the registry at once
        replicas = json.loads(run_rf("status", "--json", cwd=ops).stdout)["replicas"]
        assert [(x["url"], x["pid"]) for x in replicas] == [(servers[0].url, servers[0].pid)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=15)
            except Exception:
                p.kill()


def test_a_duckdb_workspace_has_no_replicas(tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    data = json.loads(run_rf("status", "--json", cwd=root).stdout)
    assert data["replicas"] == [] and data["store"].startswith("duckdb ")
    assert "replicas" not in run_rf("status", cwd=root).stdout


# ---------------------------------------------------------------- rf store copy

AGENT_PY = ("def handle(input, ctx):\n"
            "    ctx.memory.set('last', input)\n"
            "    with ctx.trace.span('greet', who=input.get('name')):\n"
            "        text = ctx.prompts.render('greet', name=input.get('name', 'you'))\n"
            "    hits = ctx.kb('docs').search('refund card', k=2)\n"
            "    return {'text': text, 'hits': [h['path'] for h in hits]}\n")


def _fill(root: Path) -> dict[str, Any]:
    """Agents, prompts, a release, executions with spans, a session, memory, a knowledge base."""
    import test_kb

    write_agent(root, "hello", code=AGENT_PY)
    b = open_local(load_workspace(root))
    try:
        b.create_kb("docs", chunk_size=300, overlap=50)
        b.kb_upload("docs", test_kb.DOCS, {"lang": "en"})
        b.deploy("hello", {p.name: p.read_bytes() for p in (root / "agents" / "hello").iterdir() if p.is_file()})
        b.create_prompt("greet", "Hello {{name}}")
        b.publish_release(all=True, author="ada")
        b.set_prompt("greet", "Hi {{name}}!", message="friendlier")
        ids = [b.invoke("production", "hello", {"name": "Ada"}, session_id="s1").id,
               b.invoke("staging", "hello", {"name": "Bo"}).id]
        return _snapshot(b, ids)
    finally:
        b.close()


def _snapshot(b: Any, ids: list[str]) -> dict[str, Any]:
    """What the services read back: the same from either store after a faithful copy."""
    return to_dict({
        "agents": b.list_agents(), "agent": b.get_agent("hello"), "history": b.history("hello"),
        "prompts": b.list_prompts(), "versions": b.prompt_history("greet"),
        "draft": b.get_prompt("greet", "staging"), "published": b.get_prompt("greet", "production"),
        "releases": b.list_releases(), "release": b.get_release(b.list_releases()[0].id),
        "executions": [b.get_execution(i) for i in ids], "traces": [b.get_trace(i) for i in ids],
        "session": b.get_session("s1", "production", "hello"),
        "search": b.search_kb("docs", "refund to my card", k=3).hits,
    })


def test_rf_store_copy_moves_a_workspace_to_postgresql(pg_databases: PgDatabases, tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    before = _fill(root)
    assert len(before["traces"][0]["spans"]) >= 2 and before["search"] and before["session"]["messages"]
    url = pg_databases.empty("copy")
    r = run_rf("store", "copy", "--to", url, "--password-env", PASSWORD_ENV, "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    rows = {t["name"]: t["rows"] for t in summary["tables"]}
    names = [t["name"] for t in summary["tables"]]
    assert names[:3] == ["meta", "blobs", "agents"] and names.index("commits") < names.index("executions")
    assert rows["agents"] == 1 and rows["prompt_versions"] == 2 and rows["releases"] == 1
    assert rows["executions"] == 2 and rows["span_batches"] >= 1 and rows["kb_chunks"] >= 3
    assert rows["kb_1_terms"] > 0 and sum(v for k, v in rows.items() if k.startswith("kb_1_v")) == rows["kb_chunks"]
    assert summary["rows"] == sum(rows.values()) and summary["skipped"] == []
    assert summary["target"] == url and summary["schema_version"] > 0
    with _admin(pg_databases) as con, psycopg.connect(url, password=PASSWORD) as target:
        for table, n in rows.items():
            if table != "meta":
                assert target.execute(f"SELECT count(*) FROM {table}").fetchone() == (n,), table
        del con
    # The workspace switched to PostgreSQL reads the same (the DuckDB file is left as it was).
    duck = (root / ".rf" / "rf.duckdb").stat().st_size
    toml = root / "rf.toml"
    toml.write_text(toml.read_text() + pg_databases.toml(url))
    b = open_local(load_workspace(root))
    try:
        store: Any = b.services.store
        assert store.kind == "postgresql"
        after = _snapshot(b, [e["id"] for e in before["executions"]])
        assert after == before
        again = b.invoke("production", "hello", {"name": "Cy"}, session_id="s1")  # it goes on from there
        assert again.output["text"] == "Hello Cy" and again.output["hits"] == before["executions"][0]["output"]["hits"]
        assert len(b.get_session("s1", "production", "hello").messages) > len(before["session"]["messages"])
    finally:
        b.close()
    assert (root / ".rf" / "rf.duckdb").stat().st_size == duck
    # Copying again is refused: the target holds a store now.
    r = run_rf("store", "copy", "--to", url, "--password-env", PASSWORD_ENV, cwd=root)
    assert r.returncode != 0 and "already holds an rf store" in r.stderr and "createdb" in r.stderr
    info = json.loads(run_rf("store", "info", "--json", cwd=root).stdout)
    assert info["kind"] == "postgresql" and {t["name"]: t["rows"] for t in info["tables"]}["executions"] == 3


def test_rf_store_copy_refuses_what_it_must_not_copy_into(pg_databases: PgDatabases, tmp_path: Path) -> None:
    root = init_workspace(tmp_path / "ws").root
    write_agent(root, "hello")
    r = run_rf("store", "copy", "--to", pg_databases.empty("none"), "--password-env", PASSWORD_ENV, cwd=root)
    assert r.returncode != 0 and "no DuckDB store to copy" in r.stderr
    r = run_rf("agents", "deploy", "hello", cwd=root)
    assert r.returncode == 0, r.stderr
    # Another application's database.
    url = pg_databases.empty("foreign")
    with psycopg.connect(url, password=PASSWORD, autocommit=True) as con:
        con.execute("CREATE TABLE orders (id int)")
    r = run_rf("store", "copy", "--to", url, "--password-env", PASSWORD_ENV, cwd=root)
    assert r.returncode != 0 and "not empty: it has tables that are not rf's (orders)" in r.stderr
    # Not a PostgreSQL url; a password variable that is not set.
    r = run_rf("store", "copy", "--to", "mysql://root@h/db", cwd=root)
    assert r.returncode == 2 or "must start with postgresql://" in r.stderr
    assert "must start with postgresql://" in r.stderr and "Traceback" not in r.stderr
    r = run_rf("store", "copy", "--to", pg_databases.empty("pw"), "--password-env", "UNSET_PW_VAR", cwd=root)
    assert r.returncode != 0 and "UNSET_PW_VAR" in r.stderr and "Traceback" not in r.stderr
    # A database with rf's schema and no rows (a workspace pointed at it already made it) is empty.
    r = run_rf("store", "copy", "--to", pg_databases.new("schema"), "--password-env", PASSWORD_ENV, cwd=root)
    assert r.returncode == 0, r.stderr
    assert "next: point the workspace at it" in r.stdout and f'password_env = "{PASSWORD_ENV}"' in r.stdout
    # The DuckDB file in use by another process (a server): stop it first.
    from rf.store import Store

    with Store.open(root / ".rf" / "rf.duckdb"):
        r = run_rf("store", "copy", "--to", pg_databases.empty("busy"), "--password-env", PASSWORD_ENV, cwd=root)
    assert r.returncode != 0 and "in use by another process" in r.stderr and "stop the rf server" in r.stderr
