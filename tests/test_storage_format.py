"""One storage format: a store written before span batches, root spans in execution rows
and session turns (one row per span in `spans`, one per message in `session_messages`) is
moved into the current layout once when it is opened, and reads exactly as before: traces,
their export, sessions, an agent's session history, the executions list. The old tables are
gone afterwards. Migrations run as written: a table that should not be there yet fails the
upgrade loudly, naming the step, and changes nothing. Real DuckDB files, real store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import duckdb
import pytest

from conftest import write_agent
from rf.client import Backend, open_local
from rf.config import snapshot_dir
from rf.errors import NotFound, StoreError
from rf.ids import id_at, iso, micros_of
from rf.store import Store
from rf.store.migrations import MIGRATIONS, SCHEMA_VERSION

#: The first step that has span batches: stores at the version before it keep every span in `spans`
#: and every session message in `session_messages`.
OLD = next(n for n, steps in enumerate(MIGRATIONS) if any("CREATE TABLE span_batches" in s for s in steps))

T0 = dt.datetime(2026, 3, 4, 10, 0, 0, 123456)
CHAT = """
def handle(input, ctx):
    return {"seen": [[m["role"], m["content"]] for m in ctx.session.history()],
            "last2": [m["content"] for m in ctx.session.history(limit=2)]}
"""


def ns(moment: dt.datetime) -> int:
    return micros_of(moment) * 1000


def ex_id(moment: dt.datetime, tail: str) -> str:
    return id_at("ex", moment) + tail.rjust(12, "0")


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


# Three executions (two in staging, one failed; one in production), each with a root span and
# child spans, and the spans of an execution whose row is gone (an export still shows them).
A, B, C, GONE = ex_id(at(0), "a"), ex_id(at(60), "b"), ex_id(at(120), "c"), ex_id(at(-600), "d")
EXECUTIONS = [  # id, env, status, input, output, error, started, ended, session
    (A, "staging", "succeeded", {"message": "hi"}, {"message": "hello ✓"}, None, at(0), at(2), "s1"),
    (B, "staging", "failed", {"message": "boom"}, None, "RuntimeError: no", at(60), at(60.5), None),
    (C, "production", "succeeded", {"message": "prod"}, {"message": "ok"}, None, at(120), at(121), "s1"),
]
SPANS = [  # env, trace, span, parent, execution, kind, name, start, end, status, error, attributes
    ("staging", "a" * 32, "a" * 16, None, A, "agent", "chat", ns(at(0)), ns(at(2)), "ok", None,
     {"commit": "c1", "source": "invoke", "session_id": "s1", "input": {"message": "hi"},
      "output": {"message": "hello ✓"}}),
    ("staging", "a" * 32, "a1" * 8, "a" * 16, A, "llm", "llm.chat", ns(at(0.1)), ns(at(1.5)), "ok", None,
     {"model": "mock", "tokens": 12, "output": "ünïcode \"quoted\""}),
    ("staging", "a" * 32, "a2" * 8, "a1" * 8, A, "custom", "plan", ns(at(0.2)), ns(at(0.3)), "ok", None, {}),
    ("staging", "a" * 32, "a3" * 8, "a" * 16, A, "memory", "memory.set", ns(at(1.6)), ns(at(1.7)), "ok", None,
     {"key": "k"}),
    ("staging", "b" * 32, "b" * 16, None, B, "agent", "chat", ns(at(60)), ns(at(60.5)), "error", "RuntimeError: no",
     {"commit": "c1", "source": "invoke", "error_type": "RuntimeError", "input": {"message": "boom"}}),
    ("staging", "b" * 32, "b1" * 8, "b" * 16, B, "connector", "connectors.call", ns(at(60.1)), ns(at(60.4)),
     "error", "HTTP 500", {"status": 500}),
    ("production", "c" * 32, "c" * 16, None, C, "agent", "chat", ns(at(120)), ns(at(121)), "ok", None,
     {"commit": "c1", "source": "endpoint", "session_id": "s1"}),
    ("production", "c" * 32, "c1" * 8, "c" * 16, C, "llm", "llm.chat", ns(at(120.2)), ns(at(120.9)), "ok", None,
     {"model": "mock"}),
    ("staging", "d" * 32, "d" * 16, None, GONE, "agent", "chat", ns(at(-600)), ns(at(-599)), "ok", None,
     {"commit": "c0"}),
    ("staging", "d" * 32, "d1" * 8, "d" * 16, GONE, "custom", "step", ns(at(-599.5)), ns(at(-599.2)), "ok", None,
     {"n": 1}),
]
# Session s1 in staging: A's turn, a message appended from outside between its messages (no
# execution), then a second session and production's own s1.
MESSAGES = [  # env, agent, session, seq, role, content, execution, created
    ("staging", "chat", "s1", 10, "user", "hi", A, at(0)),
    ("staging", "chat", "s1", 11, "tool", {"note": "ünïcode ✓", "n": [1, 2.5, None]}, A, at(1)),
    ("staging", "chat", "s1", 12, "user", "from outside", None, at(1.5)),
    ("staging", "chat", "s1", 13, "assistant", "hello ✓", A, at(2)),
    ("staging", "chat", "s2", 14, "user", "other session", None, at(3)),
    ("production", "chat", "s1", 20, "user", "prod", C, at(120)),
    ("production", "chat", "s1", 21, "assistant", "ok", C, at(121)),
]


def build_old_store(path: Path) -> None:
    """A store file at the layout before span batches, holding the rows above."""
    con = duckdb.connect(str(path))
    for steps in MIGRATIONS[:OLD]:
        for statement in steps:
            con.execute(statement)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(OLD)])
    for e_id, env, status, inp, out, error, started, ended, session in EXECUTIONS:
        con.execute("INSERT INTO executions VALUES (?, ?, 'chat', 'c1', 'invoke', ?, ?, ?, ?, ?, NULL, '', ?, ?, ?, ?)",
                    [e_id, env, status, json.dumps(inp), json.dumps(out), error,
                     "RuntimeError" if error else None, started, ended,
                     (ended - started).total_seconds() * 1000, session])
    for env, trace, span, parent, e_id, kind, name, start, end, status, error, attrs in SPANS:
        con.execute("INSERT INTO spans VALUES (?, ?, ?, ?, ?, 'chat', ?, ?, ?, ?, ?, ?, ?)",
                    [env, trace, span, parent, e_id, kind, name, start, end, status, error, json.dumps(attrs)])
    for env, agent, session, seq, role, content, e_id, created in MESSAGES:
        con.execute("INSERT INTO session_messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [env, agent, session, seq, role, json.dumps(content), e_id, created])
    con.close()


def tables(path: Path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    finally:
        con.close()


def contents(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr)
                for t in ("meta", "executions", "span_batches", "session_turns")}
    finally:
        con.close()


def spans_as_stored(env: str | None = None, execution: str | None = None) -> list[tuple[Any, ...]]:
    return [(s[0], s[1], s[2], s[3], s[4], "chat", s[5], s[6], s[7], s[8], s[9], s[10], s[11]) for s in SPANS
            if (env is None or s[0] == env) and (execution is None or s[4] == execution)]


def span_tuple(s: Any) -> tuple[Any, ...]:
    return (s.env, s.trace_id, s.span_id, s.parent_id, s.execution_id, s.agent, s.kind, s.name, s.start_ns,
            s.end_ns, s.status, s.error, s.attributes)


@pytest.fixture
def migrated(ws: Any) -> Any:
    build_old_store(ws.db_path)
    assert {"spans", "session_messages"} <= tables(ws.db_path)
    b: Backend = open_local(ws)
    try:
        yield b
    finally:
        b.close()


def test_traces_of_the_old_layout_read_as_before(migrated: Backend, ws: Any) -> None:
    for e_id in (A, B, C):
        trace = migrated.get_trace(e_id)
        stored = spans_as_stored(execution=e_id)
        assert trace.env == stored[0][0] and trace.trace_id == stored[0][1] and trace.agent == "chat"
        assert trace.status == stored[0][10]
        # root first, then the children by start time
        assert [span_tuple(s) for s in trace.spans] == sorted(stored, key=lambda r: (r[3] is not None, r[8]))
    with pytest.raises(NotFound):
        migrated.get_trace(C, "staging")

    listed = migrated.list_traces("staging")
    assert [(t.execution_id, t.trace_id, t.status, t.error, t.started_at, t.duration_ms) for t in listed] == [
        (B, "b" * 32, "error", "RuntimeError: no", iso(at(60)), 500.0),
        (A, "a" * 32, "ok", None, iso(at(0)), 2000.0)]
    assert [t.execution_id for t in migrated.list_traces("production")] == [C]
    assert [t.execution_id for t in migrated.list_traces("staging", since="2026-03-04T10:00:30")] == [B]

    # The export shows every span as before, the execution whose row is gone included.
    for env in ("staging", "production"):
        exported = migrated.export_spans(env)
        assert sorted(map(span_tuple, exported), key=repr) == sorted(spans_as_stored(env), key=repr)
        assert [s.start_ns for s in exported] == sorted(s.start_ns for s in exported)
    since = migrated.export_spans("staging", since="2026-03-04T10:00:01")
    assert sorted(s.span_id for s in since) == sorted(["a3" * 8, "b" * 16, "b1" * 8])
    assert [s.span_id for s in migrated.export_spans("staging", limit=2)] == ["d" * 16, "d1" * 8]


def test_sessions_and_executions_of_the_old_layout_read_as_before(migrated: Backend, ws: Any) -> None:
    def expected(env: str, session: str) -> list[tuple[Any, ...]]:
        return [(m[4], m[5], m[6], iso(m[7])) for m in MESSAGES if m[0] == env and m[2] == session]

    for env, session in (("staging", "s1"), ("staging", "s2"), ("production", "s1")):
        thread = migrated.get_session(session, env)
        assert [(m.role, m.content, m.execution_id, m.created_at) for m in thread.messages] == expected(env, session)
    listed = migrated.list_sessions("staging")
    assert [(s.id, s.messages, s.started_at, s.updated_at, s.last_message) for s in listed] == [
        ("s2", 1, iso(at(3)), iso(at(3)), "other session"), ("s1", 4, iso(at(0)), iso(at(2)), "hello ✓")]
    assert [(s.id, s.messages) for s in migrated.list_sessions("production")] == [("s1", 2)]

    executions = migrated.list_executions("staging")
    assert [(e.id, e.status, e.input, e.output, e.error, e.session_id) for e in executions] == [
        (B, "failed", {"message": "boom"}, None, "RuntimeError: no", None),
        (A, "succeeded", {"message": "hi"}, {"message": "hello ✓"}, None, "s1")]
    assert [e.id for e in migrated.list_executions("production")] == [C]

    # An agent's session history (ctx.session.history) sees the moved messages, in order.
    write_agent(ws.root, "chat", CHAT, 'entrypoint = "agent:handle"\ntimeout_s = 10\n')
    migrated.deploy("chat", snapshot_dir(ws.root / "agents" / "chat"), "v2", "ada")
    ex = migrated.invoke("staging", "chat", {"message": "again"}, "s1")
    assert ex.status == "succeeded", ex.error
    assert ex.output["seen"] == [[m[0], m[1]] for m in expected("staging", "s1")]
    assert ex.output["last2"] == ["from outside", "hello ✓"]


def test_the_move_happens_once_and_the_old_tables_are_gone(ws: Any) -> None:
    build_old_store(ws.db_path)
    with Store.open(ws.db_path) as store:
        assert store.schema_version == SCHEMA_VERSION
    assert not {"spans", "session_messages"} & tables(ws.db_path)
    after = contents(ws.db_path)
    # one batch per execution that had child spans, the gone one included; roots in their rows
    assert sorted((r[2], r[6]) for r in after["span_batches"]) == sorted([(A, 3), (B, 1), (C, 1), (GONE, 2)])
    roots = {r[0]: json.loads(r[16]) for r in after["executions"]}
    assert roots[A][:6] == ["a" * 32, "a" * 16, ns(at(0)), ns(at(2)), "ok", None]
    assert roots[B][4:6] == ["error", "RuntimeError: no"]
    # runs of consecutive seqs of one execution: A's two, the outside message, A's last, s2, C's
    assert sorted((r[2], r[3], r[4], r[5]) for r in after["session_turns"]) == sorted([
        ("s1", 10, 2, A), ("s1", 12, 1, None), ("s1", 13, 1, A), ("s2", 14, 1, None), ("s1", 20, 2, C)])
    with Store.open(ws.db_path) as store:  # a second open changes nothing
        assert store.schema_version == SCHEMA_VERSION
    assert contents(ws.db_path) == after


def test_every_older_version_upgrades(tmp_path: Path) -> None:
    for version in range(SCHEMA_VERSION):
        con = duckdb.connect(":memory:")
        for steps in MIGRATIONS[:version]:
            for statement in steps:
                con.execute(statement)
        if version:
            con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)])
        store = Store(con, None)
        try:
            assert store.schema_version == SCHEMA_VERSION, version
            found = {r[0] for r in store.query("SELECT table_name FROM duckdb_tables()")}
            assert {"executions", "span_batches", "session_turns"} <= found and not {"spans", "session_messages"} & found
        finally:
            store.close()


def test_a_table_the_recorded_version_does_not_have_fails_the_upgrade_loudly(ws: Any) -> None:
    """A file whose tables drifted from its recorded version (here: the span batch table already
    there at the version before it) is refused, naming the step, and left as it was."""
    build_old_store(ws.db_path)
    con = duckdb.connect(str(ws.db_path))
    con.execute("CREATE TABLE span_batches (x INTEGER)")
    con.close()
    before = tables(ws.db_path)
    with pytest.raises(StoreError) as info:
        Store.open(ws.db_path)
    message = info.value.message
    assert f"step v{OLD + 1} failed" in message and "span_batches" in message, message
    assert f"from schema v{OLD}" in message and info.value.hint and "backup" in info.value.hint
    assert tables(ws.db_path) == before
    con = duckdb.connect(str(ws.db_path), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (str(OLD),)
    assert con.execute("SELECT count(*) FROM spans").fetchone() == (len(SPANS),)
    con.close()
