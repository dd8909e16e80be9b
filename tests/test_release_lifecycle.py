"""Promote is a one-item release, and deletes are release items — through the real CLI and a
real `rf serve`.

`rf agents promote NAME` runs the plan of `rf releases publish agent:NAME` (diff, dependency
warnings, --with-deps, --strict, a recorded release); deleting an agent, a prompt or a connector
takes effect in staging at once and waits as "remove from production", refused under --strict
while production still uses it; rollback brings a removed item back.

Each test runs a few commands as real `rf` subprocesses (run_rf), the rest through the same
entry point in-process (run_rf_here: the same output and exit codes, no interpreter start)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent

ACTOR = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "Ada Lovelace"}

GREETER_TOML = 'description = "Greets"\nentrypoint = "agent:handle"\nprompts = ["greet"]\n'
GREETER_PY = "def handle(input, ctx):\n    return {'text': ctx.prompts.render('greet')}\n"


@pytest.fixture
def server(ws: Any) -> Iterator[ServerProc]:
    """The workspace's server, run by Ada: a release made with its token is recorded as hers."""
    s = start_server(ws.root, extra_env=ACTOR)
    try:
        yield s
    finally:
        s.stop()


def rf(*args: str, cwd: Path, code: int = 0, run: Any = run_rf_here) -> str:
    r = run(*args, cwd=cwd, env=ACTOR)
    assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout + r.stderr


def rf_json(*args: str, cwd: Path) -> Any:
    r = run_rf_here(*args, "--json", cwd=cwd, env=ACTOR)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


def pending(root: Path) -> dict[str, dict[str, Any]]:
    return {f"{i['kind']}:{i['name']}": i for i in rf_json("releases", cwd=root)}


def production_commit(root: Path, name: str) -> str | None:
    agents = {a["name"]: a for a in rf_json("agents", "list", cwd=root)}
    return agents[name]["production_commit"] if name in agents else None  # type: ignore[no-any-return]


def greeter(root: Path) -> None:
    """Agent `greeter` declares prompt `greet`, created in staging but never published."""
    write_agent(root, "greeter", GREETER_PY, GREETER_TOML)
    rf("prompts", "create", "greet", "--text", "Hello from greet", cwd=root)
    rf("agents", "deploy", "greeter", cwd=root)


# ---------------------------------------------------------------- promote = the release of agent:NAME


def test_promote_warns_about_an_unpublished_prompt_and_strict_refuses(ws: Any, server: ServerProc) -> None:
    root = ws.root
    greeter(root)
    r = run_rf("agents", "promote", "greeter", "--strict", "--yes", cwd=root, env=ACTOR)
    assert r.returncode == 1 and "--strict" in r.stderr and "prompt greet" in r.stderr, r.stderr
    assert production_commit(root, "greeter") is None  # refused: nothing changed
    # without --strict it ships, but says which dependency production lacks (it used to be silent)
    out = rf("agents", "promote", "greeter", "--yes", cwd=root)
    assert "agent greeter uses prompt greet, which has unpublished changes" in out
    assert "--with-deps" in out
    assert production_commit(root, "greeter") is not None
    # ... and production then fails at run time, as the warning said
    answer = httpx.post(f"{server.url}/production/agents/greeter", json={"input": {}}, timeout=30)
    assert answer.status_code != 200 and "not published" in answer.text
    assert list(pending(root)) == ["prompt:greet"]


def test_promote_with_deps_publishes_both_in_one_recorded_release(ws: Any, server: ServerProc) -> None:
    root = ws.root
    greeter(root)
    plan = rf_json("releases", "plan", "agent:greeter", "--with-deps", cwd=root)
    out = rf("agents", "promote", "greeter", "--with-deps", "--yes", "-m", "greeter, first version", cwd=root,
             run=run_rf)
    assert "added prompt greet" in out and "with prompt greet" in out
    [release] = rf_json("releases", "history", cwd=root)
    assert (release["author"], release["message"], release["kind"]) == ("Ada Lovelace", "greeter, first version",
                                                                       "publish")
    assert sorted((i["kind"], i["name"]) for i in release["items"]) == [("agent", "greeter"), ("prompt", "greet")]
    assert release["plan_id"] == plan["id"]  # the same plan as rf releases publish agent:greeter --with-deps
    assert pending(root) == {}
    answer = httpx.post(f"{server.url}/production/agents/greeter", json={"input": {}}, timeout=30)
    assert answer.status_code == 200 and answer.json()["output"] == {"text": "Hello from greet"}
    # the history table shows the actor and the message
    table = rf("releases", "history", cwd=root)
    assert "Ada Lovelace" in table and "greeter, first version" in table


def test_promote_checks_what_the_code_uses(ws: Any) -> None:
    """ctx.kb / ctx.data name shared things that must exist; a connector resource the code calls
    must be in production (or in the release)."""
    root = ws.root
    mock = root / "mock.json"
    mock.write_text('{"id": 1}')
    rf("connectors", "create", "crm", "--base-url", "https://crm.example.com", cwd=root)
    rf("connectors", "resources", "add", "crm", "get-customer", "--path", "/customers/{id}", "--mock-file",
       str(mock), cwd=root)
    rf("connectors", "publish", "crm", "--yes", cwd=root)
    rf("connectors", "resources", "add", "crm", "list-orders", "--path", "/orders", "--mock-file", str(mock),
       cwd=root)
    code = ("def handle(input, ctx):\n"
            "    ctx.kb('faq')\n"
            "    ctx.data(\"sales\")\n"
            "    return ctx.connectors.call('crm', 'list-orders', mock=True)\n")
    write_agent(root, "reader", code, 'entrypoint = "agent:handle"\n')
    rf("agents", "deploy", "reader", cwd=root)
    plan = rf_json("releases", "plan", "agent:reader", cwd=root)
    assert [f"{i['kind']}:{i['name']}" for i in plan["missing_dependencies"]] == ["connector:crm"]
    assert plan["unavailable"] == ["knowledge base faq", "data source sales"]
    r = run_rf("agents", "promote", "reader", "--strict", "--with-deps", "--yes", cwd=root, env=ACTOR)
    assert r.returncode == 1 and "knowledge base faq" in r.stderr and "data source sales" in r.stderr, r.stderr
    out = rf("agents", "promote", "reader", "--with-deps", "--yes", cwd=root)
    assert "knowledge base faq" in out and "rf kb create faq" in out
    assert "connector crm" in out and pending(root) == {}


# ---------------------------------------------------------------- deletes


def test_deleting_an_agent_in_staging_then_removing_it_from_production(ws: Any, server: ServerProc) -> None:
    root = ws.root
    rf("agents", "deploy", "hello", cwd=root)
    rf("agents", "promote", "hello", "--yes", "-m", "hello v1", cwd=root)
    rf("invoke", "hello", "--env", "production", cwd=root)
    # no terminal, no --yes: a clear error, nothing deleted
    r = run_rf("agents", "delete", "hello", cwd=root)
    assert r.returncode == 2 and "--yes" in r.stderr and "confirmation" in r.stderr
    out = rf("agents", "delete", "hello", "--yes", cwd=root)
    assert "deleted agent hello in staging" in out and "rf releases publish agent:hello" in out
    assert httpx.post(f"{server.url}/staging/agents/hello", json={"input": {}}).status_code == 404
    assert httpx.post(f"{server.url}/production/agents/hello", json={"input": {}}).status_code == 200
    item = pending(root)["agent:hello"]
    assert item["after"] is None and item["before"] == production_commit(root, "hello")
    assert "remove from production" in item["summary"]
    # deleting again says where it stands and what is left to do
    r = run_rf("agents", "delete", "hello", "--yes", cwd=root)
    assert r.returncode == 1 and "already deleted in staging" in r.stderr and "rf releases publish" in r.stderr
    rf("releases", "publish", "agent:hello", "--yes", "-m", "retire hello", cwd=root)
    assert httpx.post(f"{server.url}/production/agents/hello", json={"input": {}}).status_code == 404
    # gone from lists and from rf releases; history, releases and executions stay readable
    assert rf_json("agents", "list", cwd=root) == [] and pending(root) == {}
    assert "hello" not in rf("agents", "list", cwd=root).split("in agents/")[0]
    assert len(rf_json("agents", "history", "hello", cwd=root)) == 1
    messages = [r["message"] for r in rf_json("releases", "history", cwd=root)]
    assert messages == ["retire hello", "hello v1"]
    assert [e["agent"] for e in rf_json("executions", "list", "--env", "production", cwd=root)] == ["hello"] * 2
    # deployed again, it comes back in staging only
    rf("agents", "deploy", "hello", cwd=root)
    assert [(a["name"], a["production_commit"]) for a in rf_json("agents", "list", cwd=root)] == [("hello", None)]


def test_an_agent_removal_is_refused_under_strict_while_a_production_trigger_runs_it(ws: Any,
                                                                                   server: ServerProc) -> None:
    root = ws.root
    rf("agents", "deploy", "hello", cwd=root)
    rf("agents", "promote", "hello", "--yes", cwd=root)
    staging = rf_json("triggers", "create", "--agent", "hello", "--schedule", "0 0 1 1 *", cwd=root)["id"]
    production = rf_json("triggers", "duplicate", staging, "--env", "production", cwd=root)["id"]
    rf("releases", "publish", f"trigger:{production}", "--yes", cwd=root)
    out = rf("agents", "delete", "hello", "--yes", cwd=root)
    assert "staging trigger" in out and staging in out  # the staging trigger that now fails is named
    r = run_rf("releases", "publish", "agent:hello", "--strict", "--yes", cwd=root, env=ACTOR)
    assert r.returncode == 1 and "still uses" in r.stderr and production in r.stderr, r.stderr
    assert production_commit(root, "hello") is not None
    # the default plan of --all says so, naming the user
    plan = run_rf("releases", "plan", "--all", cwd=root)
    assert "removing agent hello from production breaks what still uses it there" in plan.stderr
    assert production in plan.stderr


def test_a_prompt_delete_archives_and_its_removal_waits_for_the_agents_using_it(ws: Any,
                                                                              server: ServerProc) -> None:
    root = ws.root
    greeter(root)
    rf("prompts", "set", "greet", "--text", "Hello again", cwd=root)
    rf("agents", "promote", "greeter", "--with-deps", "--yes", cwd=root)
    out = rf("prompts", "delete", "greet", "--yes", cwd=root)
    assert "deleted prompt greet" in out and "staging agent greeter uses prompt greet" in out
    # archived in staging: no draft; production still has v2; every version stays readable
    r = run_rf("prompts", "show", "greet", cwd=root)
    assert r.returncode == 1 and "deleted in staging" in r.stderr
    assert rf_json("prompts", "show", "greet", "--env", "production", cwd=root)["version"] == 2
    assert [v["version"] for v in rf_json("prompts", "history", "greet", cwd=root)] == [2, 1]
    assert rf_json("prompts", "show", "greet", "--version", "1", cwd=root)["text"] == "Hello from greet"
    assert pending(root)["prompt:greet"]["after"] is None
    # refused under --strict while production agent greeter uses it, naming it
    r = run_rf("releases", "publish", "prompt:greet", "--strict", "--yes", cwd=root, env=ACTOR)
    assert r.returncode == 1 and "agent greeter" in r.stderr and "still uses" in r.stderr, r.stderr
    assert httpx.post(f"{server.url}/production/agents/greeter", json={"input": {}}).status_code == 200
    # warned otherwise (naming the user), then gone from the list; --archived shows it
    out = rf("releases", "publish", "--all", "--yes", cwd=root)
    assert "removing prompt greet from production breaks what still uses it there: agent greeter" in out
    assert rf_json("prompts", "list", cwd=root) == []
    [archived] = rf_json("prompts", "list", "--archived", cwd=root)
    assert archived["archived"] and archived["versions"] == 2
    # created again: its next version, history kept
    rf("prompts", "create", "greet", "--text", "Hello, third", cwd=root)
    assert [v["version"] for v in rf_json("prompts", "history", "greet", cwd=root)] == [3, 2, 1]


def test_connector_delete_is_refused_under_strict_while_a_production_agent_declares_it(ws: Any,
                                                                                     server: ServerProc) -> None:
    """The issue's 500: deleting crm in staging, then `publish connector:crm --strict` removed it from
    production although production agent `caller` declares it."""
    root = ws.root
    mock = root / "mock.json"
    mock.write_text('{"id": 7}')
    rf("connectors", "create", "crm", "--base-url", "https://crm.example.com", cwd=root)
    rf("connectors", "resources", "add", "crm", "get-customer", "--path", "/customers/{id}", "--mock-file",
       str(mock), cwd=root)
    code = "def handle(input, ctx):\n    return ctx.connectors.call('crm', 'get-customer', mock=True, id=7)\n"
    write_agent(root, "caller", code, 'entrypoint = "agent:handle"\nconnectors = ["crm"]\n')
    rf("agents", "deploy", "caller", cwd=root)
    rf("agents", "promote", "caller", "--with-deps", "--yes", cwd=root)
    assert httpx.post(f"{server.url}/production/agents/caller", json={"input": {}}).json()["output"] == {"id": 7}
    rf("connectors", "delete", "crm", "--yes", cwd=root)
    assert pending(root)["connector:crm"]["after"] is None
    r = run_rf("releases", "publish", "connector:crm", "--strict", "--yes", cwd=root, env=ACTOR)
    assert r.returncode == 1 and "agent caller" in r.stderr and "still uses" in r.stderr, r.stderr
    answer = httpx.post(f"{server.url}/production/agents/caller", json={"input": {}})
    assert answer.status_code == 200 and answer.json()["output"] == {"id": 7}  # production untouched


def test_rollback_restores_removed_items(ws: Any, server: ServerProc) -> None:
    root = ws.root
    greeter(root)
    rf("agents", "promote", "greeter", "--with-deps", "--yes", cwd=root)
    rf("agents", "delete", "greeter", "--yes", cwd=root)
    rf("prompts", "delete", "greet", "--yes", cwd=root)
    rf("releases", "publish", "--all", "--strict", "--yes", "-m", "retire greeter", cwd=root)
    assert httpx.post(f"{server.url}/production/agents/greeter", json={"input": {}}).status_code == 404
    assert rf_json("agents", "list", cwd=root) == []
    [removal, _] = rf_json("releases", "history", cwd=root)
    assert sorted((i["kind"], i["name"], i["after"]) for i in removal["items"]) == [
        ("agent", "greeter", None), ("prompt", "greet", None)]
    rf("releases", "rollback", removal["id"], "--yes", cwd=root, run=run_rf)
    answer = httpx.post(f"{server.url}/production/agents/greeter", json={"input": {}})
    assert answer.status_code == 200 and answer.json()["output"] == {"text": "Hello from greet"}
    # staging still says deleted: the removals are pending again
    assert sorted(pending(root)) == ["agent:greeter", "prompt:greet"]
