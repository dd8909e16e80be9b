"""Agent definitions are strict: unknown keys in agent.toml and rf.toml are errors with a
did-you-mean, agents are deployed from agents/NAME only, names say their rule the same way
everywhere; trace verbosity per environment; what a session records of each turn.

Everything goes through the real `rf` command, and `rf serve` where the behaviour shows there:
each test runs some commands as real subprocesses (run_rf), the rest through the same entry
point in this process (run_rf_here, the same output and exit codes without a new interpreter).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import HELLO_PY, ServerProc, run_rf, run_rf_here, start_server, write_agent
from rf.config import AGENT_TOML_KEYS, NAME_RULE, RF_TOML_KEYS, parse_agent_toml

OK_TOML = 'entrypoint = "agent:handle"\ntimeout_s = 10\n'


def deployed(root: Path) -> list[str]:
    r = run_rf_here("agents", "list", "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    return [a["name"] for a in json.loads(r.stdout)]


# ------------------------------------------------------------ agent.toml


@pytest.mark.parametrize(("toml", "expected"), [
    (OK_TOML.replace("timeout_s", "timout_s"), "unknown key 'timout_s' (did you mean 'timeout_s'?)"),
    (OK_TOML + 'descripton = "x"\n', "unknown key 'descripton' (did you mean 'description'?)"),
    (OK_TOML + '[trace]\nstagin = "full"\n', "unknown key 'stagin' in [trace] (did you mean 'staging'?)"),
    (OK_TOML + '[trace]\nstaging = "full"\ntrace_max_chars = 50\n',
     "unknown key 'trace_max_chars' in [trace] (trace_max_chars belongs at the top of the file"),
    (OK_TOML + '[session]\noutptu = "reply"\n', "unknown key 'outptu' in [session] (did you mean 'output'?)"),
    (OK_TOML + '[sesion]\ninput = "q"\n', "unknown table [sesion] (did you mean 'session'?)"),
    (OK_TOML + '[env]\npass = []\ndescription = "set below [env]"\n', "description is an agent.toml key"),
    (OK_TOML + 'prompts = ["Support Prompt"]\n', "invalid prompt name 'Support Prompt'"),
])
def test_unknown_agent_toml_keys_are_refused_at_deploy_and_by_rf_test(ws: Any, toml: str, expected: str) -> None:
    write_agent(ws.root, "strict", toml=toml)
    for run, command in ((run_rf, ("agents", "deploy", "strict")), (run_rf_here, ("test", "strict", "{}"))):
        r = run(*command, cwd=ws.root)
        assert r.returncode == 1, (command, r.stdout, r.stderr)
        assert "agents/strict/agent.toml: " in r.stderr and expected in r.stderr, (command, r.stderr)
        assert "Traceback" not in r.stderr
    assert deployed(ws.root) == []
    hint = run_rf_here("agents", "deploy", "strict", cwd=ws.root).stderr.split("hint:", 1)[1]
    assert "takes:" in hint or "move" in hint or NAME_RULE in hint


def test_the_agent_toml_schema_is_what_parse_reads() -> None:
    """Every declared key parses (a key added to the schema but not read would be silently
    ignored again), and a commit deployed before keys were checked still runs."""
    full = ('description = "d"\nentrypoint = "agent:handle"\ntimeout_s = 5\nprompts = ["p"]\n'
            'connectors = ["c"]\ntrace_max_chars = 100\n'
            '[trace]\nstaging = "full"\nproduction = "minimal"\n'
            '[session]\ninput = "question"\noutput = "reply"\n[env]\npass = ["HOME"]\n'
            '[input.schema]\ntype = "object"\n[uses]\nagents = ["other"]\n')
    config = parse_agent_toml("x", full)
    assert set(AGENT_TOML_KEYS[""]) == set(config.raw)
    assert config.input_schema == {"type": "object"}
    assert config.trace == {"staging": "full", "production": "minimal"}
    assert (config.session_input, config.session_output) == ("question", "reply")
    assert config.uses_agents == ["other"]
    old = parse_agent_toml("x", 'entrypoint = "agent:handle"\ntimout_s = 1\n', strict=False)
    assert old.timeout_s == 60.0


# ------------------------------------------------------------ rf.toml


def set_rf_toml(root: Path, extra_server: str = "", tail: str = "") -> None:
    path = root / "rf.toml"
    text = path.read_text()
    path.write_text(text.replace("[server]\n", "[server]\n" + extra_server, 1) + tail)


@pytest.mark.parametrize(("extra_server", "tail", "expected", "hint"), [
    ("prot = 8000\n", "", "unknown key 'prot' in [server] (did you mean 'port'?)", "[server] takes: host, port"),
    ("require_key = true\n", "", "unknown key 'require_key' in [server] (did you mean 'require_keys'?)",
     "require_keys"),
    ("", '\n[deploys]\nkeep = 5\n', "unknown table [deploys]", "rf.toml takes: workspace, server, llm"),
    ("", '\n[releases]\nkeep = 5\n', "unknown key 'keep' in [releases]", "[releases] takes: approvals, require_evals"),
    ("", '\n[llm]\ndefualt = "mock"\n', "unknown key 'defualt' in [llm] (did you mean 'default'?)",
     "[llm] takes: default, timeout_s, mock"),
    ("", '\n[[llm.mock.rules]]\nmatch = "a"\nreplly = "b"\n',
     "unknown key 'replly' in [[llm.mock.rules]] #1 (did you mean 'reply'?)", "match, regex, reply, tool_call"),
    ("", '\n[[llm.mock.rules]]\nmatch = "a"\ntool_call = { name = "t", argumnets = {} }\n',
     "unknown key 'argumnets' in [[llm.mock.rules]] #1 tool_call (did you mean 'arguments'?)", "name, arguments"),
])
def test_unknown_rf_toml_keys_fail_every_command(ws: Any, extra_server: str, tail: str, expected: str,
                                                 hint: str) -> None:
    set_rf_toml(ws.root, extra_server, tail)
    for command in (("status",), ("agents", "list"), ("agents", "deploy", "hello"), ("serve", "--port", "0")):
        r = (run_rf if command[0] == "serve" else run_rf_here)(*command, cwd=ws.root, timeout=30)
        assert r.returncode == 1, (command, r.stderr)
        assert f"{ws.root / 'rf.toml'}: " in r.stderr and expected in r.stderr, (command, r.stderr)
        assert hint in r.stderr.split("hint:", 1)[1], r.stderr


def test_every_key_rf_reads_from_rf_toml_is_accepted(ws: Any) -> None:
    set_rf_toml(ws.root, 'allowed_hosts = ["rf.internal"]\nrequire_keys = false\n',
                '\n[llm]\ndefault = "mock"\ntimeout_s = 30\n'
                '[[llm.mock.rules]]\nmatch = "refund"\nregex = false\nreply = "5 days"\n'
                '[[llm.mock.rules]]\nmatch = "order"\ntool_call = { name = "lookup", arguments = { id = "42" } }\n')
    r = run_rf("status", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    used = {f"{table}.{key}" if table else key for table, keys in RF_TOML_KEYS.items() for key in keys}
    assert {"server.allowed_hosts", "server.require_keys", "llm.mock.rules[].tool_call.arguments"} <= used


# ------------------------------------------------------------ where agents come from


def test_deploy_takes_agents_under_agents_only(ws: Any, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere" / "outside"
    outside.mkdir(parents=True)
    (outside / "agent.toml").write_text(OK_TOML)
    (outside / "agent.py").write_text(HELLO_PY)
    (ws.root / "drafts" / "draft").mkdir(parents=True)  # inside the workspace, not in agents/
    (ws.root / "drafts" / "draft" / "agent.toml").write_text(OK_TOML)
    (ws.root / "drafts" / "draft" / "agent.py").write_text(HELLO_PY)
    cases = [((str(outside),), ws.root), (("../../elsewhere/outside",), ws.root / "agents"),
             (("drafts/draft",), ws.root), ((), ws.root / "drafts" / "draft")]
    for args, cwd in cases:
        for command in ("agents deploy", "test"):
            r = run_rf_here(*command.split(), *args, *(("{}",) if command == "test" and args else ()), cwd=cwd)
            assert r.returncode == 2, (args, command, r.stderr)
            assert "is not a directory of this workspace's agents/" in r.stderr, r.stderr
            assert "hint: move it there (mv " in r.stderr and "then: rf agents deploy " in r.stderr
    assert deployed(ws.root) == []
    # A name, or a path that is agents/NAME, is fine.
    assert run_rf("agents", "deploy", "./agents/hello", cwd=ws.root).returncode == 0
    write_agent(ws.root, "other")
    assert run_rf_here("agents", "deploy", "../other", cwd=ws.root / "agents" / "hello").returncode == 0
    assert run_rf_here("agents", "deploy", "-m", "here", cwd=ws.root / "agents" / "other").returncode == 0
    assert sorted(deployed(ws.root)) == ["hello", "other"]
    r = run_rf("agents", "deploy", "ghost", cwd=ws.root)
    assert r.returncode == 1 and "no agent directory agents/ghost" in r.stderr and "hello, other" in r.stderr


def test_an_invalid_name_says_the_rule_once_the_same_way_everywhere(ws: Any) -> None:
    (ws.root / "agents" / "Bad Name").mkdir()
    (ws.root / "agents" / "Bad Name" / "agent.toml").write_text(OK_TOML)
    commands: dict[str, list[tuple[str, ...]]] = {
        "agent": [("agents", "deploy", "Bad Name"), ("agents", "deploy", "agents/Bad Name"), ("test", "Bad Name", "{}")],
        "prompt": [("prompts", "create", "Bad Name", "--text", "hi")],
        "knowledge base": [("kb", "create", "Bad Name")],
        "credential": [("credentials", "set", "Bad Name", "--from-stdin", "--yes")],
        "provider": [("providers", "add", "Bad Name", "--kind", "mock")],
        "key": [("keys", "create", "--env", "staging", "--name", "Bad Name")],
    }
    for kind, runs in commands.items():
        for command in runs:
            r = (run_rf if command == ("agents", "deploy", "Bad Name") else run_rf_here)(*command, cwd=ws.root)
            assert r.returncode == 2, (command, r.stderr)
            assert f"error: invalid {kind} name 'Bad Name'" in r.stderr, (command, r.stderr)
            assert r.stderr.count(NAME_RULE) == 1, (command, r.stderr)


# ------------------------------------------------------------ trace verbosity per environment

TRACED_PY = """
def handle(input, ctx):
    with ctx.trace.span("step", text=input["text"]):
        ctx.memory.get("k")
    return {"echo": input["text"]}
"""


def _trace(server: ServerProc, root: Path, env: str, text: str) -> dict[str, Any]:
    r = httpx.post(f"{server.url}/{env}/agents/traced", json={"input": {"text": text}}, timeout=30)
    assert r.status_code == 200, r.text
    shown = run_rf_here("traces", "show", r.json()["execution_id"], "--env", env, "--json", cwd=root)
    assert shown.returncode == 0, shown.stderr
    return {s["name"]: s for s in json.loads(shown.stdout)["spans"]}


def test_one_commit_traces_fully_in_staging_and_minimally_in_production(ws: Any) -> None:
    toml = OK_TOML + '[trace]\nstaging = "full"\nproduction = "minimal"\n'
    write_agent(ws.root, "traced", TRACED_PY, toml)
    assert run_rf("agents", "deploy", "traced", cwd=ws.root).returncode == 0
    assert run_rf_here("agents", "promote", "traced", "--yes", cwd=ws.root).returncode == 0
    text = "x" * 5000  # longer than what a "standard" trace keeps (trace_max_chars, 2000)
    server = start_server(ws.root)
    try:
        staging = _trace(server, ws.root, "staging", text)
        production = _trace(server, ws.root, "production", text)
    finally:
        server.stop()
    assert staging["traced"]["attributes"]["input"] == {"text": text}
    assert staging["traced"]["attributes"]["output"] == {"echo": text}
    assert staging["step"]["attributes"] == {"text": text}
    assert staging["memory.get"]["attributes"]["input"] == {"key": "k"}
    assert set(production["traced"]["attributes"]) == {"commit", "source", "release_id"}  # minimal: no input/output
    assert production["traced"]["attributes"]["commit"] == staging["traced"]["attributes"]["commit"]
    assert production["step"]["attributes"] == {} and production["memory.get"]["attributes"] == {}


def test_a_top_level_trace_mode_is_both_environments(ws: Any) -> None:
    write_agent(ws.root, "traced", TRACED_PY, OK_TOML + 'trace = "minimal"\n')
    assert run_rf("agents", "deploy", "traced", cwd=ws.root).returncode == 0
    assert run_rf_here("agents", "promote", "traced", "--yes", cwd=ws.root).returncode == 0
    for env in ("staging", "production"):
        ex = json.loads(run_rf_here("invoke", "traced", '{"text": "hi"}', "--env", env, "--json", cwd=ws.root).stdout)
        spans = json.loads(run_rf_here("traces", "show", ex["id"], "--env", env, "--json", cwd=ws.root).stdout)["spans"]
        assert all("input" not in s["attributes"] for s in spans), (env, spans)
    write_agent(ws.root, "traced", TRACED_PY, OK_TOML + '[trace]\nproduction = "verbose"\n')
    r = run_rf_here("agents", "deploy", "traced", cwd=ws.root)
    assert r.returncode == 1 and "[trace] production must be one of full, standard, minimal" in r.stderr


# ------------------------------------------------------------ sessions

SESSION_PY = """
def handle(input, ctx):
    # An agent that records the turn itself, as if rf did not: nothing is kept twice.
    ctx.session.append("user", input["question"])
    history = ctx.session.history(for_llm=True)
    reply = f"answer {len(history)}"
    ctx.session.append("tool", {"looked_up": input["question"]})
    ctx.session.append("assistant", reply)
    return {"reply": reply, "sources": ["faq"], "seen": history}
"""
SESSION_TOML = OK_TOML + '[session]\ninput = "question"\noutput = "reply"\n'


def test_the_endpoint_records_each_turn_once_with_the_named_fields(ws: Any) -> None:
    write_agent(ws.root, "faq", SESSION_PY, SESSION_TOML)
    write_agent(ws.root, "plain", "def handle(input, ctx):\n    return {'answer': 42, 'why': 'it is'}\n")
    for run, name in ((run_rf, "faq"), (run_rf_here, "plain")):
        assert run("agents", "deploy", name, cwd=ws.root).returncode == 0
    server = start_server(ws.root)
    try:
        url = f"{server.url}/staging/agents/faq"
        for question in ("refunds?", "and returns?"):
            r = httpx.post(url, json={"input": {"question": question, "lang": "en"}, "session_id": "c-1"})
            assert r.status_code == 200 and r.json()["status"] == "succeeded", r.text
        second = r.json()["output"]
        headers = {"Authorization": f"Bearer {server.token}"}
        thread = httpx.get(f"{url}/sessions/c-1", headers=headers).json()
        r = httpx.post(f"{server.url}/staging/agents/plain", json={"input": {"message": "hi"}, "session_id": "p"})
        assert r.status_code == 200
        plain = httpx.get(f"{server.url}/staging/agents/plain/sessions/p", headers=headers).json()
    finally:
        server.stop()
    assert [(m["role"], m["content"]) for m in thread["messages"]] == [
        ("user", "refunds?"), ("tool", {"looked_up": "refunds?"}), ("assistant", "answer 1"),
        ("user", "and returns?"), ("tool", {"looked_up": "and returns?"}), ("assistant", "answer 3"),
    ]
    # In the run, history(for_llm=True) had the earlier turn (tool left out) and its own append.
    assert second["seen"] == [{"role": "user", "content": "refunds?"}, {"role": "assistant", "content": "answer 1"},
                              {"role": "user", "content": "and returns?"}]
    # Without [session], an output without a "message" field is kept whole.
    assert [(m["role"], m["content"]) for m in plain["messages"]] == [
        ("user", "hi"), ("assistant", {"answer": 42, "why": "it is"})]


def test_an_output_without_a_message_reads_as_text_for_the_llm(ws: Any) -> None:
    code = ("def handle(input, ctx):\n"
            "    return {'reply_to': input, 'history': ctx.session.history(for_llm=True), 'n': 2}\n")
    write_agent(ws.root, "dicts", code)
    assert run_rf("agents", "deploy", "dicts", cwd=ws.root).returncode == 0
    run_rf_here("invoke", "dicts", '{"topic": "x"}', "--session", "d-1", "--json", cwd=ws.root)
    r = run_rf_here("invoke", "dicts", '{"message": "next"}', "--session", "d-1", "--json", cwd=ws.root)
    history = json.loads(r.stdout)["output"]["history"]
    assert history == [
        {"role": "user", "content": "topic: x"},
        {"role": "assistant", "content": 'reply_to: {"topic": "x"}\nhistory: []\nn: 2'},
    ]
