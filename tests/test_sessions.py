"""Sessions (threads): per environment, appended by invocations with a session id,
read and extended by agent code, shown by the CLI and the server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here, write_agent
from rf.client import Backend, HttpBackend, open_local
from rf.config import snapshot_dir
from rf.errors import NotFound, ProductionReadOnly, UsageError

TOML = 'description = "Chats"\nentrypoint = "agent:handle"\ntimeout_s = 10\n'
CHAT = """
def handle(input, ctx):
    history = ctx.session.history()
    if input.get("note"):
        ctx.session.append("tool", {"note": input["note"]})
        history_now = ctx.session.history()
    else:
        history_now = history
    if input.get("remember"):
        ctx.memory.set(input["remember"], {"said": input["message"]})
    if input.get("fail"):
        raise RuntimeError("boom after appending")
    return {"message": f"{ctx.env} heard {input['message']!r} after {len(history)} messages",
            "seen": [m["content"] for m in history_now], "session": ctx.session.id}
"""


@pytest.fixture
def local(ws: Any) -> Iterator[Backend]:
    write_agent(ws.root, "chat", CHAT, TOML)
    b: Backend = open_local(ws)
    try:
        b.deploy("chat", snapshot_dir(ws.root / "agents" / "chat"), "v1", "ada")
        yield b
    finally:
        b.close()


def contents(b: Backend, session_id: str, env: str) -> list[tuple[str, Any]]:
    return [(m.role, m.content) for m in b.get_session(session_id, env).messages]


def test_invocations_append_turns_in_their_environment(local: Backend) -> None:
    local.promote("chat", "ada")
    first = local.invoke("staging", "chat", {"message": "hi"}, "s1")
    second = local.invoke("staging", "chat", {"message": "again"}, "s1")
    prod = local.invoke("production", "chat", {"message": "hello prod"}, "s1")
    assert first.output["message"] == "staging heard 'hi' after 0 messages"
    assert second.output["seen"] == ["hi", "staging heard 'hi' after 0 messages"]
    assert prod.output["message"] == "production heard 'hello prod' after 0 messages"  # never the staging turns

    assert contents(local, "s1", "staging") == [
        ("user", "hi"), ("assistant", "staging heard 'hi' after 0 messages"),
        ("user", "again"), ("assistant", "staging heard 'again' after 2 messages"),
    ]
    staging = local.get_session("s1", "staging")
    assert staging.env == "staging" and staging.agent == "chat"
    assert [m.execution_id for m in staging.messages] == [first.id, first.id, second.id, second.id]
    assert contents(local, "s1", "production") == [
        ("user", "hello prod"), ("assistant", "production heard 'hello prod' after 0 messages")]

    listed = local.list_sessions("staging")
    assert [(s.id, s.agent, s.messages, s.env) for s in listed] == [("s1", "chat", 4, "staging")]
    assert listed[0].last_message == "staging heard 'again' after 2 messages"
    assert [s.messages for s in local.list_sessions("production")] == [2]
    assert local.list_sessions("staging", agent="other") == []


def test_agent_appends_and_reads_its_own_messages(local: Backend) -> None:
    ex = local.invoke("staging", "chat", {"message": "look it up", "note": "found 3"}, "s2")
    assert ex.status == "succeeded", ex.error
    assert ex.output["seen"] == [{"note": "found 3"}]  # its own append, before commit
    assert contents(local, "s2", "staging") == [
        ("user", "look it up"), ("tool", {"note": "found 3"}),
        ("assistant", "staging heard 'look it up' after 0 messages")]


LLM_CHAT = """
def handle(input, ctx):
    if input.get("note"):
        ctx.session.append("tool", {"note": input["note"]})
    history = ctx.session.history() if input.get("raw") else ctx.session.history(for_llm=True)
    messages = history + [{"role": "user", "content": input.get("message", "?")}]
    reply = ctx.llm.chat(messages)
    return {"message": reply.text, "sent": messages, "raw": ctx.session.history()}
"""


def test_history_for_llm_goes_straight_to_ctx_llm_chat(local: Backend, ws: Any) -> None:
    """A session that holds a tool message with a dict, and an input without a "message",
    still makes a conversation the LLM takes: non-text content as JSON text, tool messages
    left out (``history()`` alone would be refused by ``ctx.llm.chat``)."""
    write_agent(ws.root, "llmchat", LLM_CHAT, TOML)
    local.deploy("llmchat", snapshot_dir(ws.root / "agents" / "llmchat"), "v1", "ada")
    first = local.invoke("staging", "llmchat", {"message": "hi", "note": "looked up 3 orders"}, "s9")
    assert first.status == "succeeded", first.error
    second = local.invoke("staging", "llmchat", {"message": "and now?", "n": 2}, "s9")
    assert second.status == "succeeded", second.error
    assert second.output["sent"] == [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": first.output["message"]},
        {"role": "user", "content": "and now?"},
    ]
    assert [m["role"] for m in second.output["raw"]] == ["user", "tool", "assistant"]  # history() keeps it all
    assert second.output["raw"][1]["content"] == {"note": "looked up 3 orders"}
    # An input without a "message" is kept whole; for the LLM it is readable text, one
    # "field: value" line per field (values that are not text as JSON).
    third = local.invoke("staging", "llmchat", {"question": "x", "also": [1, 2]}, "s10")
    assert third.status == "succeeded", third.error
    fourth = local.invoke("staging", "llmchat", {"message": "y"}, "s10")
    assert fourth.output["sent"][0] == {"role": "user", "content": "question: x\nalso: [1, 2]"}
    # The plain history, with its tool message and dict content, is what ctx.llm.chat refuses.
    refused = local.invoke("staging", "llmchat", {"message": "z", "raw": True}, "s9")
    assert refused.status == "failed" and "content must be a string" in (refused.error or "")


def test_a_failed_execution_leaves_the_session_untouched(local: Backend) -> None:
    local.invoke("staging", "chat", {"message": "one"}, "s3")
    failed = local.invoke("staging", "chat", {"message": "two", "note": "x", "fail": True}, "s3")
    assert failed.status == "failed" and "boom after appending" in (failed.error or "")
    assert failed.session_id == "s3"
    assert [c for _, c in contents(local, "s3", "staging")] == ["one", "staging heard 'one' after 0 messages"]


def test_one_row_per_execution_and_earlier_rows_read_alike(local: Backend) -> None:
    """An execution's messages are one `session_turns` row; the rows of earlier executions
    read as the start of the same session (a store's older per-message rows are moved into
    this layout when it is opened: tests/test_storage_format.py)."""
    import datetime as dt

    from rf.ids import micros_of
    from rf.services.sessions import next_seq

    store = local.services.store
    at = dt.datetime(2026, 1, 2, 3, 4, 5, 678000)
    seq = next_seq(2)
    store.queue_session_turn(("staging", "chat", "old", seq, 2, "ex-old", at, at, json.dumps(
        [["user", "before v12", micros_of(at)], ["assistant", {"n": 1}, micros_of(at)]])))
    store.queue_session_turn(("production", "chat", "old", next_seq(), 1, "ex-p", at, at, json.dumps(
        [["user", "other env", micros_of(at)]])))
    ex = local.invoke("staging", "chat", {"message": "after", "note": "ünïcode ✓"}, "old")
    assert ex.status == "succeeded", ex.error
    assert ex.output["seen"] == ["before v12", {"n": 1}, {"note": "ünïcode ✓"}]
    store.flush()
    turns = store.cursor().execute(
        "SELECT env, session_id, count, execution_id FROM session_turns WHERE execution_id = ?", [ex.id]).fetchall()
    assert turns == [("staging", "old", 3, ex.id)]

    thread = local.get_session("old", "staging")
    assert [(m.role, m.content, m.execution_id) for m in thread.messages] == [
        ("user", "before v12", "ex-old"), ("assistant", {"n": 1}, "ex-old"),
        ("user", "after", ex.id), ("tool", {"note": "ünïcode ✓"}, ex.id),
        ("assistant", "staging heard 'after' after 2 messages", ex.id)]
    assert thread.messages[0].created_at == "2026-01-02T03:04:05.678Z"
    times = [m.created_at for m in thread.messages[2:]]
    assert times == sorted(times) and times[0] >= ex.started_at[:23]
    # history(limit) cuts inside a row, across rows.
    stored = store.session_messages("staging", "old", "chat", limit=4)
    assert [r[2] for r in stored] == [{"n": 1}, "after", {"note": "ünïcode ✓"},
                                      "staging heard 'after' after 2 messages"]
    assert [r[2] for r in store.session_messages("staging", "old", "chat", limit=2)] == [
        {"note": "ünïcode ✓"}, "staging heard 'after' after 2 messages"]
    assert store.session_messages("staging", "old", "chat", limit=0) == []
    assert len(store.session_messages("staging", "old", "chat", limit=99)) == 5
    listed = local.list_sessions("staging")
    assert [(s.id, s.messages, s.last_message) for s in listed] == [
        ("old", 5, "staging heard 'after' after 2 messages")]
    assert listed[0].started_at == "2026-01-02T03:04:05.678Z"
    assert [(s.id, s.messages, s.last_message) for s in local.list_sessions("production")] == [
        ("old", 1, "other env")]
    assert store.session_agents("staging", "old") == ["chat"]


def test_session_ids_are_validated_before_anything_runs(local: Backend) -> None:
    for bad in ("has space", "", "x" * 129, "semi;colon", "ünïcode"):
        with pytest.raises(UsageError) as info:
            local.invoke("staging", "chat", {"message": "x"}, bad)
        assert "invalid session id" in info.value.message and info.value.hint
    assert local.list_executions("staging") == []  # nothing was recorded
    ok = local.invoke("staging", "chat", {"message": "x"}, "A-z_0.9:" + "y" * 120)
    assert ok.status == "succeeded"


def test_without_a_session(local: Backend) -> None:
    ex = local.invoke("staging", "chat", {"message": "alone"})
    assert ex.status == "succeeded" and ex.output["seen"] == [] and ex.output["session"] is None
    ex = local.invoke("staging", "chat", {"message": "alone", "note": "x"})
    assert ex.status == "failed"
    assert "this execution has no session" in (ex.error or "")
    assert local.list_sessions("staging") == []


def test_unknown_and_ambiguous_sessions(local: Backend, ws: Any) -> None:
    with pytest.raises(NotFound) as info:
        local.get_session("nope", "staging")
    assert info.value.hint == "list them: rf sessions list --env staging"
    local.promote("chat", "ada")
    local.invoke("production", "chat", {"message": "p"}, "only-prod")
    with pytest.raises(NotFound) as info:
        local.get_session("only-prod", "staging")
    assert "exists in production" in (info.value.hint or "")
    with pytest.raises(UsageError):
        local.get_session("bad id", "staging")
    # The same id used by two agents: each has its own session; naming one is required.
    write_agent(ws.root, "chat2", CHAT, TOML)
    local.run_test("chat2", snapshot_dir(ws.root / "agents" / "chat2"), {"message": "t"}, "shared")
    local.invoke("staging", "chat", {"message": "s"}, "shared")
    with pytest.raises(UsageError) as amb:
        local.get_session("shared", "staging")
    assert "chat, chat2" in amb.value.message
    assert contents_of(local, "shared", "chat2")[0] == ("user", "t")


def contents_of(b: Backend, session_id: str, agent: str) -> list[tuple[str, Any]]:
    return [(m.role, m.content) for m in b.get_session(session_id, "staging", agent).messages]


def test_endpoint_cli_and_http_backend(ws: Any, server: ServerProc) -> None:
    write_agent(ws.root, "chat", CHAT, TOML)
    http = HttpBackend(server.url, server.token, ws)
    http.deploy("chat", snapshot_dir(ws.root / "agents" / "chat"), "v1", "ada")
    r = httpx.post(f"{server.url}/staging/agents/chat",
                   json={"input": {"message": "hey", "remember": "007"}, "session_id": "web-1"})
    assert r.status_code == 200, r.text
    r = httpx.post(f"{server.url}/staging/agents/chat", json={"input": {"message": "x"}, "session_id": "bad id"})
    assert r.status_code == 400 and "invalid session id" in r.json()["error"]["message"]

    assert httpx.get(f"{server.url}/staging/agents/chat/sessions/web-1").status_code == 401  # a key or the token
    auth = {"Authorization": f"Bearer {server.token}"}
    got = httpx.get(f"{server.url}/staging/agents/chat/sessions/web-1", headers=auth)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["env"] == "staging" and body["agent"] == "chat"
    assert [(m["role"], m["content"]) for m in body["messages"]] == [
        ("user", "hey"), ("assistant", "staging heard 'hey' after 0 messages")]
    missing = httpx.get(f"{server.url}/production/agents/chat/sessions/web-1", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"

    r = run_rf("invoke", "chat", "--session", "web-1", "--input", '{"message": "from cli"}', cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert [m.content for m in http.get_session("web-1", "staging").messages][2] == "from cli"
    assert [(s.id, s.messages) for s in http.list_sessions("staging")] == [("web-1", 4)]
    assert http.list_sessions("production") == []
    with pytest.raises(NotFound):
        http.get_session("web-1", "production")
    shown = run_rf_here("sessions", "show", "web-1", cwd=ws.root)
    assert shown.returncode == 0, shown.stderr
    assert "turn 1" in shown.stdout and "turn 2" in shown.stdout
    assert "user › hey" in shown.stdout and "assistant › staging heard 'hey'" in shown.stdout

    # Memory over the management API: keys travel in JSON bodies, never re-typed ("007" is not 7).
    assert http.get_memory("007", "staging").value == {"said": "hey"}
    assert [m.key for m in http.list_memory("staging", "00")] == ["007"]
    with pytest.raises(ProductionReadOnly):
        http.clear_memory("production")
    assert http.clear_memory("staging").keys == ["007"]


def test_rf_test_chat_is_one_staging_session(ws: Any) -> None:
    write_agent(ws.root, "chat", CHAT, TOML)
    r = run_rf("test", "chat", "--chat", cwd=ws.root, input="hello\n\nsecond line\nexit\nnever sent\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["staging heard 'hello' after 0 messages",
                                     "staging heard 'second line' after 2 messages"]
    assert "session chat_" in r.stderr
    b = open_local(ws)
    try:
        listed = b.list_sessions("staging")
        assert len(listed) == 1 and listed[0].id.startswith("chat_") and listed[0].messages == 4
        assert b.list_sessions("production") == [] and b.list_executions("production") == []
    finally:
        b.close()
    # rf test --session continues a session too; --chat refuses --input.
    again = run_rf_here("test", "chat", "--session", listed[0].id, "--input", '{"message": "more"}', "--json",
                   cwd=ws.root)
    assert json.loads(again.stdout)["output"]["message"] == "staging heard 'more' after 4 messages"
    refused = run_rf_here("test", "chat", "--chat", "--input", "{}", cwd=ws.root)
    assert refused.returncode == 2 and "--chat reads its input" in refused.stderr


RECORDER = """
def handle(input, ctx):
    for role, content in input["append"]:
        ctx.session.append(role, content)
    return {"message": input["reply"]}
"""


@pytest.mark.parametrize(("appends", "kept"), [
    # The turn's input as "user" and its output as "assistant": recorded once, by rf.
    ([["user", "hi"], ["assistant", "hello"]], []),
    ([["user", "hi"], ["user", "hi"]], []),
    # Anything else is the agent's own message: the same text in another role, other content.
    ([["assistant", "hi"], ["user", "hello"], ["system", "hi"]], [("assistant", "hi"), ("user", "hello"),
                                                                   ("system", "hi")]),
    ([["user", {"message": "hi"}], ["user", "hi!"]], [("user", {"message": "hi"}), ("user", "hi!")]),
])
def test_appending_the_turn_itself_does_not_duplicate_it(local: Backend, ws: Any, appends: list[Any],
                                                          kept: list[tuple[str, Any]]) -> None:
    write_agent(ws.root, "recorder", RECORDER, TOML)
    local.deploy("recorder", snapshot_dir(ws.root / "agents" / "recorder"), "v1", "ada")
    ex = local.invoke("staging", "recorder", {"message": "hi", "append": appends, "reply": "hello"}, "r-1")
    assert ex.status == "succeeded", ex.error
    thread = local.get_session("r-1", "staging").messages
    assert [(m.role, m.content) for m in thread] == [("user", "hi"), *kept, ("assistant", "hello")]
