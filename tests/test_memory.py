"""Memory: per-environment namespaces, all-or-nothing per execution, read-only production."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import run_rf, run_rf_here, write_agent
from rf.client import Backend, open_local
from rf.config import snapshot_dir
from rf.errors import NotFound, ProductionReadOnly, UsageError
from rf.store import Store

TOML = 'description = "Remembers"\nentrypoint = "agent:handle"\ntimeout_s = 10\n'
#: Runs a list of memory operations and returns their results.
MEM = """
def handle(input, ctx):
    mem = ctx.memory.scope(input["scope"]) if input.get("scope") else ctx.memory
    out = []
    for op, *args in input.get("ops", []):
        if op == "set":
            mem.set(args[0], args[1])
            out.append(None)
        elif op == "get":
            out.append(mem.get(args[0], "<missing>"))
        elif op == "delete":
            mem.delete(args[0])
            out.append(None)
        elif op == "list":
            out.append(mem.list(*args))
        elif op == "bad-set":
            try:
                mem.set("k", {1, 2} if args[0] == "set" else "x" * 300_000 if args[0] == "big" else float("nan"))
            except Exception as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        elif op == "bad-key":
            try:
                mem.get(args[0])
            except Exception as exc:
                out.append(f"{type(exc).__name__}: {exc}")
        elif op == "raise":
            raise RuntimeError("failing on purpose")
    return {"env": ctx.env, "results": out}
"""


@pytest.fixture
def local(ws: Any) -> Iterator[Backend]:
    write_agent(ws.root, "mem", MEM, TOML)
    b: Backend = open_local(ws)
    try:
        b.deploy("mem", snapshot_dir(ws.root / "agents" / "mem"), "v1", "ada")
        b.promote("mem", "ada")
        yield b
    finally:
        b.close()


def run(b: Backend, env: str, *ops: list[Any], scope: str | None = None) -> Any:
    ex = b.invoke(env, "mem", {"ops": [list(o) for o in ops], "scope": scope})
    assert ex.status == "succeeded", ex.error
    return ex.output["results"]


def test_each_environment_has_its_own_namespace(local: Backend) -> None:
    run(local, "staging", ["set", "greeting", {"text": "hi from staging"}], ["set", "n", 1])
    run(local, "production", ["set", "greeting", "hi from production"])
    assert run(local, "staging", ["get", "greeting"], ["get", "n"]) == [{"text": "hi from staging"}, 1]
    assert run(local, "production", ["get", "greeting"], ["get", "n"]) == ["hi from production", "<missing>"]
    # An agent can narrow its scope, never widen it to the other environment.
    run(local, "staging", ["set", "last", "order-7"], scope="user:42")
    assert run(local, "staging", ["list", ""], ["get", "last"], scope="user:42") == [["last"], "order-7"]
    assert run(local, "staging", ["list", ""]) == [["greeting", "n", "user:42:last"]]
    run(local, "staging", ["set", "production:greeting", "trying to escape"])
    assert run(local, "production", ["get", "greeting"], ["list", ""]) == ["hi from production", ["greeting"]]

    staging = {m.key: m for m in local.list_memory("staging")}
    assert sorted(staging) == ["greeting", "n", "production:greeting", "user:42:last"]
    assert all(m.env == "staging" and m.agent == "mem" for m in staging.values())
    assert staging["greeting"].value == {"text": "hi from staging"} and staging["greeting"].size > 0
    assert [m.key for m in local.list_memory("production")] == ["greeting"]
    assert [m.key for m in local.list_memory("staging", prefix="user:")] == ["user:42:last"]
    assert local.get_memory("greeting", "production").value == "hi from production"
    with pytest.raises(NotFound):
        local.get_memory("n", "production")


def test_an_execution_reads_its_own_writes_and_commits_only_on_success(local: Backend) -> None:
    assert run(local, "staging", ["set", "a", 1], ["get", "a"], ["delete", "a"], ["get", "a"], ["set", "b", [1]],
               ["list", ""]) == [None, 1, None, "<missing>", None, ["b"]]
    failed = local.invoke("staging", "mem", {"ops": [["set", "b", "changed"], ["set", "c", 3], ["raise"]]})
    assert failed.status == "failed" and "failing on purpose" in (failed.error or "")
    assert [(m.key, m.value) for m in local.list_memory("staging")] == [("b", [1])]  # nothing half-written


def test_bad_values_and_keys_are_refused_clearly(local: Backend) -> None:
    results = run(local, "staging", ["set", "ok", 1], ["bad-set", "set"], ["bad-set", "big"], ["bad-set", "nan"],
                  ["bad-key", ""], ["bad-key", "x" * 600], ["bad-key", "tab\there"])
    assert results[0] is None
    assert results[1].startswith("UsageError: ctx.memory.set('k'): the value is not JSON-serializable")
    assert results[2].startswith("PayloadTooLarge: ctx.memory.set('k'): the value is too large (293 KiB")
    assert "256 KiB" in results[2]
    assert "not JSON-serializable" in results[3]
    assert results[4] == "UsageError: ctx.memory: a key must be a non-empty string"
    assert "key is too long" in results[5] and "control characters" in results[6]
    assert [m.key for m in local.list_memory("staging")] == ["ok"]  # refused writes never happened
    # Unhandled, the error fails the execution and nothing of it is kept.
    ex = local.invoke("staging", "mem", {"ops": [["set", "kept?", 1], ["set", "bad", None]]})
    assert ex.status == "succeeded"  # None is JSON
    ex = local.run_test("mem", {"agent.toml": TOML.encode(), "agent.py": (
        b"def handle(input, ctx):\n    ctx.memory.set('x', 1)\n    ctx.memory.set('y', object())\n")})
    assert ex.status == "failed" and "not JSON-serializable" in (ex.error or "")
    assert "x" not in {m.key for m in local.list_memory("staging")}


def test_deferred_writes_the_host_refuses_fail_the_execution(local: Backend) -> None:
    """Calls that bypass ctx's own checks (agent code using the outbox directly) are checked
    again by the host when it replays them: the execution fails, the call's span says why, and
    nothing the execution wrote is kept."""
    code = (b"from rf.runtime.ctx_trace import outbox\n"
            b"def handle(input, ctx):\n"
            b"    ctx.memory.set('before', 1)\n"
            b"    outbox(ctx).defer(input['method'], input['params'])\n"
            b"    ctx.memory.set('after', 2)\n"
            b"    return 'ok'\n")
    files = {"agent.toml": TOML.encode(), "agent.py": code}
    cases = [
        ("memory.set", {"key": "", "value": 1}, "a memory key must be a non-empty string"),
        ("memory.set", {"key": "tab\there", "value": 1}, "control characters"),
        ("memory.set", {"key": "k", "value": 1, "extra": True}, "extra"),
        ("memory.delete", {"key": 7}, "a memory key must be a non-empty string"),
        ("session.append", {"role": "wizard", "content": "hi"}, "role must be one of"),
        ("session.append", {"role": "tool", "content": "hi"}, "this execution has no session"),
    ]
    for method, params, message in cases:
        session = "s-1" if params.get("role") == "wizard" else None
        ex = local.run_test("mem", files, {"method": method, "params": params}, session)
        assert ex.status == "failed", (method, params)
        assert message in (ex.error or ""), (method, params, ex.error)
        trace = local.get_trace(ex.id, "staging")
        failed = [s for s in trace.spans if s.name == method and s.status == "error"]
        assert len(failed) == 1 and message in (failed[0].error or ""), (method, params)
        assert trace.spans[0].status == "error"
        assert not ex.error.startswith("ctx memory.set: ctx.memory")  # said once
    assert {m.key for m in local.list_memory("staging")} == set()
    assert local.list_sessions("staging") == []  # not even the user's input


def test_production_memory_is_read_only(local: Backend) -> None:
    run(local, "production", ["set", "p", 1])
    run(local, "staging", ["set", "s1", 1], ["set", "s2", 2], ["set", "t", 3])
    for call in (lambda: local.delete_memory("p", "production"), lambda: local.clear_memory("production")):
        with pytest.raises(ProductionReadOnly) as info:
            call()
        assert "production is read-only" in info.value.message and "staging" in (info.value.hint or "")
    assert local.get_memory("p", "production").value == 1
    change = local.delete_memory("s1", "staging")
    assert (change.deleted, change.keys) == (1, ["s1"])
    with pytest.raises(NotFound):
        local.delete_memory("s1", "staging")
    assert local.clear_memory("staging", prefix="s").keys == ["s2"]
    assert [m.key for m in local.list_memory("staging")] == ["t"]
    assert local.clear_memory("staging").deleted == 1
    assert local.list_memory("staging") == [] and [m.key for m in local.list_memory("production")] == ["p"]
    with pytest.raises(UsageError):
        local.list_memory("qa")


def test_writes_survive_closing_the_store(ws: Any) -> None:
    write_agent(ws.root, "mem", MEM, TOML)
    files = snapshot_dir(ws.root / "agents" / "mem")
    b = open_local(ws)
    try:
        assert b.run_test("mem", files, {"ops": [["set", "durable", {"v": 1}]]}).status == "succeeded"
    finally:
        b.close()
    b = open_local(ws)
    try:
        assert b.get_memory("durable", "staging").value == {"v": 1}
    finally:
        b.close()


def test_compaction_keeps_only_the_newest_values(tmp_path: Any) -> None:
    from rf.services.sessions import next_seq

    now = dt.datetime(2026, 1, 1)
    with Store.open(tmp_path / "c.duckdb") as store:
        rows = [("staging", f"k{i % 3}", next_seq(), json.dumps(i), "a", None, now) for i in range(30)]
        rows += [("production", "k0", next_seq(), '"prod"', "a", None, now), ("staging", "gone", next_seq(), "1", "a",
                                                                             None, now)]
        rows += [("staging", "gone", next_seq(), None, "a", None, now)]  # deleted
        store.queue_memory(rows)
        store.flush()
        assert store.compact_memory() == 29  # 27 superseded + both rows of the deleted key
        assert [(r[0], r[1]) for r in store.memory_items("staging")] == [("k0", "27"), ("k1", "28"), ("k2", "29")]
        assert store.memory_value("production", "k0") is not None and store.memory_value("staging", "gone") is None
        assert store.query("SELECT count(*) FROM memory")[0][0] == 4


# `rf` as a real subprocess (run_rf) for a few commands, the rest in-process (run_rf_here, same entry point)
def test_memory_cli(ws: Any) -> None:
    write_agent(ws.root, "mem", MEM, TOML)
    b = open_local(ws)
    try:
        ex = b.run_test("mem", snapshot_dir(ws.root / "agents" / "mem"),
                        {"ops": [["set", "007", {"agent": "bond"}], ["set", "x", 2]]})
        assert ex.status == "succeeded", ex.error
    finally:
        b.close()
    listed = run_rf("memory", "list", "--json", cwd=ws.root)
    assert [(m["key"], m["value"], m["env"]) for m in json.loads(listed.stdout)] == [
        ("007", {"agent": "bond"}, "staging"), ("x", 2, "staging")]
    table = run_rf_here("memory", "list", cwd=ws.root)
    assert "namespace staging:" in table.stdout and '{"agent": "bond"}' in table.stdout
    got = run_rf_here("memory", "get", "007", cwd=ws.root)
    assert json.loads(got.stdout) == {"agent": "bond"} and "staging:007" in got.stderr
    refused = run_rf_here("memory", "delete", "x", "--env", "production", cwd=ws.root)
    assert refused.returncode != 0 and "production is read-only" in refused.stderr
    assert run_rf("memory", "clear", cwd=ws.root).returncode == 2  # no TTY, no --yes
    assert run_rf_here("memory", "delete", "x", cwd=ws.root).returncode == 0
    missing = run_rf_here("memory", "get", "x", cwd=ws.root)
    assert missing.returncode != 0 and "no memory key 'x' in staging" in missing.stderr
