"""Eval suites (issue 18 items 1-2): suites that live with the agent, checked at deploy;
every scorer passing and failing through the real runtime; multi-turn cases in one session;
repeat with pass any/all; `rf eval` through the real CLI (in-process and against a real
`rf serve`), JUnit XML, --json and exit codes."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_rf, run_rf_here, start_server, write_agent
from rf.client import LocalBackend, open_local
from rf.config import find_workspace, init_workspace, snapshot_dir
from rf.errors import InvalidAgent, NotFound, UsageError
from rf.models import EvalResult

AGENT_TOML = 'description = "eval target"\nentrypoint = "agent:handle"\ntimeout_s = 20\n'
AGENT_PY = '''
def handle(input, ctx):
    input = input or {}
    kind = input.get("kind", "hello")
    if kind == "fail":
        raise ValueError("boom")
    if kind == "crm":
        customer = ctx.connectors.call("crm", "get-customer", id="7")
        return {"message": "customer " + customer["name"]}
    if kind == "llm":
        return {"message": ctx.llm.chat([{"role": "user", "content": input["q"]}]).text}
    if kind == "turns":
        return {"message": "seen %d" % len(ctx.session.history())}
    name = input.get("name", "world")
    return {"message": GREETING + ", " + name, "total": {"amount": 9.95}, "items": [1, 2]}

GREETING = "hello"
'''

#: Each scorer once passing (case id ok-*) and once failing (bad-*).
SUITE_YAML = '''
- id: ok-equals
  input: {name: Ada}
  expect:
    equals: {message: "hello, Ada", total: {amount: 9.95}, items: [1, 2]}
- id: bad-equals
  input: {name: Bob}
  expect:
    equals: {message: "hello, Ada", total: {amount: 9.95}, items: [1, 2]}
- id: ok-contains
  input: {name: Ada}
  expect: {contains: [hello, Ada], not_contains: Bob}
- id: bad-contains
  input: {name: Ada}
  expect: {contains: Bob}
- id: bad-not-contains
  input: {name: Ada}
  expect: {not_contains: Ada}
- id: ok-regex
  input: {name: Ada}
  expect: {regex: 'hello, [A-Z][a-z]+'}
- id: bad-regex
  input: {name: Ada}
  expect: {regex: '^goodbye'}
- id: ok-schema
  input: {name: Ada}
  expect:
    json_schema: {type: object, required: [message, total], properties: {message: {type: string}}}
- id: bad-schema
  input: {name: Ada}
  expect:
    json_schema: {type: object, required: [missing_field]}
- id: ok-number
  input: {name: Ada}
  expect: {number: {path: total.amount, value: 10, tolerance: 0.1}}
- id: bad-number
  input: {name: Ada}
  expect: {number: {path: items.1, min: 3}}
- id: ok-max-ms
  input: {name: Ada}
  expect: {max_ms: 10000}
- id: bad-max-ms
  input: {name: Ada}
  expect: {max_ms: 0.000001}
- id: ok-similar
  input: {name: Ada}
  expect: {similar: {text: 'message: hello, Ada; total amount 9.95', threshold: 0.6}}
- id: bad-similar
  input: {name: Ada}
  expect: {similar: "The weather in Paris is sunny today."}
- id: ok-judge
  input: {kind: llm, q: "Refunds take 5 days"}
  expect: {judge: 'The answer mentions "refunds" and "5 days".'}
- id: bad-judge
  input: {kind: llm, q: "Refunds take 5 days"}
  expect: {judge: 'The answer mentions "store credit".'}
- id: ok-status
  input: {kind: fail}
  expect: {status: failed, contains: boom}
- id: bad-status
  input: {kind: fail}
  expect: {contains: boom}
'''

CALLS_JSONL = (
    '{"id": "ok-calls", "input": {"kind": "crm"}, "expect": {"calls": {"must": ["crm.get-customer"], '
    '"must_not": ["crm.delete-customer"]}, "contains": "customer Ada"}}\n'
    '\n'
    '{"id": "bad-calls", "input": {"name": "Ada"}, "expect": {"calls": ["crm.get-customer"]}}\n'
    '{"id": "bad-calls-forbidden", "input": {"kind": "crm"}, "expect": {"calls": {"must_not": ["crm.get-customer"]}}}\n'
)

TURNS_YAML = '''
- id: turns
  inputs: [{kind: turns, message: hi}, {kind: turns, message: again}, {kind: turns, message: more}]
  expect: {contains: seen 4}
- id: flaky-any
  input: {name: Ada}
  repeat: 3
  pass: any
  expect: {contains: Ada}
- id: flaky-all-fails
  input: {name: Ada}
  repeat: 2
  expect: {contains: nobody}
'''


def _make_ws(tmp_path: Path, greeting: str = "hello") -> Any:
    ws = init_workspace(tmp_path / "ws")
    write_agent(ws.root, "bot", AGENT_PY.replace('GREETING = "hello"', f'GREETING = "{greeting}"'), AGENT_TOML,
                extra={"evals/scorers.yaml": SUITE_YAML, "evals/calls.jsonl": CALLS_JSONL,
                       "evals/turns.yaml": TURNS_YAML})
    return ws


def _setup_connector(b: Any) -> None:
    b.create_connector("crm", "http://127.0.0.1:9/api", mock=True)
    b.add_resource("crm", "get-customer", "GET", "/customers/{id}", mock_response={"id": "7", "name": "Ada"})
    b.add_resource("crm", "delete-customer", "DELETE", "/customers/{id}", mock_response={})


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Any, LocalBackend]]:
    ws = _make_ws(tmp_path)
    b = open_local(ws)
    try:
        _setup_connector(b)
        yield ws, b
    finally:
        b.close()


def _by_id(result: EvalResult) -> dict[str, Any]:
    return {c.id: c for c in result.cases}


def _score(case: Any, scorer: str) -> Any:
    return next(s for s in case.attempts[0].scores if s.scorer == scorer)


def test_every_scorer_passes_and_fails_through_the_runtime(local: tuple[Any, LocalBackend]) -> None:
    ws, b = local
    b.deploy("bot", snapshot_dir(ws.root / "agents" / "bot"), "v1", "ada")
    result = b.run_eval("bot", "staging")
    cases = _by_id(result)
    assert result.files == ["evals/calls.jsonl", "evals/scorers.yaml", "evals/turns.yaml"]
    for case_id, case in cases.items():
        if case_id.startswith("ok-"):
            assert case.passed, (case_id, [(s.scorer, s.detail) for s in case.attempts[0].scores])
        elif case_id.startswith("bad-"):
            assert not case.passed, case_id
    # each failing case fails for the scorer it is about (status passes, the scorer does not)
    for case_id, scorer in [("bad-equals", "equals"), ("bad-contains", "contains"),
                            ("bad-not-contains", "not_contains"), ("bad-regex", "regex"),
                            ("bad-schema", "json_schema"), ("bad-number", "number"), ("bad-max-ms", "max_ms"),
                            ("bad-similar", "similar"), ("bad-judge", "judge"), ("bad-calls", "calls"),
                            ("bad-calls-forbidden", "calls"), ("bad-status", "status")]:
        assert not _score(cases[case_id], scorer).passed, case_id
    assert "missing_field" in _score(cases["bad-schema"], "json_schema").detail
    assert "below min 3" in _score(cases["bad-number"], "number").detail
    assert _score(cases["bad-calls"], "calls").detail == "not called: crm.get-customer (calls made: none)"
    assert "called: crm.get-customer" in _score(cases["bad-calls-forbidden"], "calls").detail
    assert _score(cases["ok-similar"], "similar").score > 0.6 > _score(cases["bad-similar"], "similar").score
    assert "store credit" in _score(cases["bad-judge"], "judge").detail
    assert "boom" in _score(cases["bad-status"], "status").detail
    assert cases["ok-equals"].line == 2 and cases["bad-calls"].line == 3  # where each case starts
    # every run is an execution of staging's commit, with source eval
    agent = b.get_agent("bot")
    assert result.commit == agent.staging_commit and result.env == "staging"
    ex = b.get_execution(cases["ok-calls"].attempts[0].execution_ids[0])
    assert (ex.source, ex.env, ex.commit) == ("eval", "staging", agent.staging_commit)
    assert result.total == len(cases) and result.passed + result.failed == result.total
    assert result.pass_rate == round(result.passed / result.total, 4)


def test_multi_turn_case_runs_in_one_session_and_repeat_any_all(local: tuple[Any, LocalBackend]) -> None:
    ws, b = local
    files = snapshot_dir(ws.root / "agents" / "bot")
    result = b.run_eval("bot", "staging", files=files)
    cases = _by_id(result)
    assert result.commit == "working-copy"
    turns = cases["turns"]
    assert turns.passed, turns.attempts[0].scores
    attempt = turns.attempts[0]
    assert len(attempt.execution_ids) == 3 and attempt.session_id is not None
    thread = b.get_session(attempt.session_id, "staging")
    assert [m.content for m in thread.messages if m.role == "user"] == ["hi", "again", "more"]
    executions = [b.get_execution(i) for i in attempt.execution_ids]
    assert {e.session_id for e in executions} == {attempt.session_id}
    assert {e.source for e in executions} == {"eval"} and {e.commit for e in executions} == {"working-copy"}
    any_case, all_case = cases["flaky-any"], cases["flaky-all-fails"]
    assert (any_case.passed, any_case.repeat, len(any_case.attempts), any_case.pass_rule) == (True, 3, 3, "any")
    assert (all_case.passed, all_case.passes, all_case.repeat) == (False, 0, 2)
    # --repeat overrides each case's own; --case picks one
    one = b.run_eval("bot", "staging", case="flaky-any", repeat=2, files=files)
    assert [c.id for c in one.cases] == ["flaky-any"] and one.cases[0].repeat == 2 == len(one.cases[0].attempts)
    with pytest.raises(NotFound, match="no eval case 'nope'"):
        b.run_eval("bot", "staging", case="nope", files=files)
    with pytest.raises(UsageError, match="staging only"):
        b.run_eval("bot", "production", files=files)


def test_pass_any_passes_when_only_some_attempts_pass(tmp_path: Path) -> None:
    """pass: any is pass@k — one good attempt among failing ones is enough; pass: all is not."""
    ws = init_workspace(tmp_path / "ws")
    code = ("import itertools\n_n = itertools.count()\n"
            "def handle(input, ctx):\n    return {'message': 'good' if next(_n) % 2 else 'bad'}\n")
    suite = ('[{"id": "any", "input": {}, "repeat": 2, "pass": "any", "expect": {"contains": "good"}}]')
    write_agent(ws.root, "alt", code, AGENT_TOML, extra={"evals/alt.yaml": suite})
    with (ws.root / "rf.toml").open("a") as fh:  # one worker: its count alternates between attempts
        fh.write("\n[runtime.staging]\nmax_workers_per_agent = 1\n")
    b = open_local(find_workspace(ws.root))
    try:
        files = snapshot_dir(ws.root / "agents" / "alt")
        result = b.run_eval("alt", "staging", files=files)
        case = result.cases[0]
        assert (case.passes, case.passed, result.workers) == (1, True, 1)
        strict = files | {"evals/alt.yaml": suite.replace('"any"', '"all"').encode()}
        assert not b.run_eval("alt", "staging", files=strict).cases[0].passed
    finally:
        b.close()


@pytest.mark.parametrize(("path", "text", "where", "what"), [
    ("evals/a.yaml", "- id: x\n  input: {}\n  expect:\n    contain: hi\n", "evals/a.yaml:4",
     "unknown scorer 'contain'"),
    ("evals/a.yaml", "- id: x\n  input: {a: [1, 2}\n", "evals/a.yaml:2", "not valid YAML"),
    ("evals/a.yaml", "- id: ok\n  input: 1\n- id: x\n  expect: {contains: hi}\n", "evals/a.yaml:3",
     "needs exactly one of input"),
    ("evals/a.jsonl", '{"id": "ok", "input": 1}\n{"id": "x", "input": 1, "expect": {"regex": "("}}\n',
     "evals/a.jsonl:2", "not a valid regular expression"),
    ("evals/a.jsonl", '{"id": "ok", "input": 1}\n{"id": "ok", "input": 2}\n', "evals/a.jsonl:2", "already used"),
    ("evals/a.yaml", "- id: x\n  input: 1\n  repeat: 0\n", "evals/a.yaml:3", "repeat must be"),
    ("evals/a.yaml", "- id: x\n  input: 1\n  expect: {number: {path: a}}\n", "evals/a.yaml:3", "number:"),
])
def test_deploy_refuses_a_bad_suite_with_file_and_line(tmp_path: Path, path: str, text: str, where: str,
                                                       what: str) -> None:
    ws = init_workspace(tmp_path / "ws")
    write_agent(ws.root, "bot", AGENT_PY, AGENT_TOML, extra={path: text})
    b = open_local(ws)
    try:
        with pytest.raises(InvalidAgent) as info:
            b.deploy("bot", snapshot_dir(ws.root / "agents" / "bot"), "v1", "ada")
        assert f"agents/bot/{where}" in info.value.message and what in info.value.message, info.value.message
        assert info.value.hint
        assert b.list_agents() == []  # nothing was committed
    finally:
        b.close()


def test_unknown_scorer_hint_suggests_the_close_name(tmp_path: Path) -> None:
    from rf.evals import load_suite

    with pytest.raises(InvalidAgent) as info:
        load_suite({"evals/x.jsonl": b'{"id": "a", "input": 1, "expect": {"max_msec": 5}}\n'}, agent="bot")
    assert "agents/bot/evals/x.jsonl:1" in info.value.message
    assert "did you mean 'max_ms'" in (info.value.hint or "")


def test_mock_judge_is_deterministic() -> None:
    from rf.evals.judge import parse_verdict
    from rf.llm.mock import judge_verdict

    request = json.dumps({"rubric": 'mentions "Ada" and `refund`', "output": "Dear ada, your REFUND is on its way"})
    assert parse_verdict(judge_verdict(request))[0] is True
    missing = json.dumps({"rubric": 'mentions "Bob"', "output": "hello Ada"})
    passed, score, reason = parse_verdict(judge_verdict(missing))
    assert (passed, score) == (False, 0.0) and "Bob" in reason
    assert parse_verdict(judge_verdict(json.dumps({"rubric": "be nice", "output": ""})))[0] is False
    assert parse_verdict("Sure! {\"pass\": true, \"score\": 0.9}")[:2] == (True, 0.9)
    assert parse_verdict("no idea")[0] is False


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path,
         *args: str) -> tuple[int, str, str]:
    """`rf ARGS` in this process (rf.cli.app.run, as the console script calls it)."""
    from rf.cli import app as cli_app

    monkeypatch.chdir(cwd)
    monkeypatch.setattr(sys, "argv", ["rf", *args])
    monkeypatch.setattr(cli_app.state, "workspace_dir", None)
    with pytest.raises(SystemExit) as info:
        cli_app.run()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def test_rf_eval_cli_in_process_table_json_junit_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    ws = _make_ws(tmp_path)
    b = open_local(ws)
    try:
        _setup_connector(b)
    finally:
        b.close()
    root = ws.root
    code, out, err = _cli(monkeypatch, capsys, root, "eval", "bot")  # not deployed yet
    assert code == 1 and "never deployed" in err and "rf agents deploy bot" in err
    junit = tmp_path / "reports" / "evals.xml"
    code, out, err = _cli(monkeypatch, capsys, root, "eval", "bot", "--local", "--junit", str(junit))
    assert code == 1  # the bad-* cases fail
    assert "✓ pass" in out and "✗ fail" in out and "ok-equals" in out
    assert "passed (" in out and "failed" in out
    assert "bad-number (evals/scorers.yaml:" in out and "below min 3" in out  # failures in full
    tree = ET.parse(junit).getroot()
    suite = tree.find("testsuite")
    assert suite is not None and suite.get("name") == "rf eval bot (staging)"
    testcases = suite.findall("testcase")
    failed = {t.get("name") for t in testcases if t.find("failure") is not None}
    assert {t.get("name") for t in testcases} >= {"ok-equals", "bad-equals", "turns"}
    assert failed == {t.get("name") for t in testcases if str(t.get("name")).startswith(("bad-", "flaky-all"))}
    assert int(suite.get("failures", "0")) == len(failed) and int(suite.get("tests", "0")) == len(testcases)
    # one passing case: exit 0; --json prints the whole result and nothing else
    code, out, err = _cli(monkeypatch, capsys, root, "eval", "bot", "--local", "--case", "ok-regex", "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["total"], data["passed"], data["cases"][0]["id"]) == (1, 1, "ok-regex")
    assert data["cases"][0]["attempts"][0]["scores"][0]["scorer"] == "status"
    code, out, err = _cli(monkeypatch, capsys, root, "eval", "bot", "--local", "--env", "production")
    assert code == 2 and "staging only" in err
    (root / "agents" / "bot" / "evals" / "broken.yaml").write_text("- id: b\n  input: 1\n  expect: {judge: 3}\n")
    code, out, err = _cli(monkeypatch, capsys, root, "eval", "bot", "--local")
    assert code != 0 and "agents/bot/evals/broken.yaml:3" in err and "judge" in err


def test_rf_eval_with_a_real_server_staging_vs_production(tmp_path: Path) -> None:
    """Production runs its published commit (and suite); staging its newer deploy: a change
    that breaks a case shows in staging only. Exit codes and JUnit through the real `rf`."""
    ws = init_workspace(tmp_path / "ws")
    suite = '{"id": "greets", "input": {"name": "Ada"}, "expect": {"contains": "hello, Ada"}}\n'
    write_agent(ws.root, "bot", AGENT_PY, AGENT_TOML, extra={"evals/smoke.jsonl": suite})
    root = ws.root
    assert run_rf("agents", "deploy", "bot", cwd=root).returncode == 0
    assert run_rf_here("agents", "promote", "bot", "--yes", cwd=root).returncode == 0
    write_agent(ws.root, "bot", AGENT_PY.replace('GREETING = "hello"', 'GREETING = "howdy"'), AGENT_TOML,
                extra={"evals/smoke.jsonl": suite})
    assert run_rf_here("agents", "deploy", "bot", cwd=root).returncode == 0
    server = start_server(root)
    try:
        staging = run_rf("eval", "bot", "--json", cwd=root)
        assert staging.returncode == 1, staging.stderr
        result = json.loads(staging.stdout)
        assert (result["env"], result["passed"], result["failed"]) == ("staging", 0, 1)
        assert "howdy, Ada" in result["cases"][0]["attempts"][0]["scores"][1]["detail"]
        production = run_rf_here("eval", "bot", "--env", "production", "--junit", "prod.xml", cwd=root)
        assert production.returncode == 0, production.stderr + production.stdout
        assert "1/1 passed" in production.stdout
        assert ET.parse(root / "prod.xml").getroot().find("testsuite").get("failures") == "0"  # type: ignore[union-attr]
        listed = run_rf_here("executions", "list", "--env", "production", "--source", "eval", "--json", cwd=root)
        executions = json.loads(listed.stdout)
        assert len(executions) == 1 and executions[0]["source"] == "eval"
        assert server.proc.poll() is None  # it ran in the server (which still owns the store)
    finally:
        server.stop()


def test_calls_in_a_minimal_trace_and_an_agent_without_a_suite(tmp_path: Path) -> None:
    """A minimal trace keeps no attributes: `calls` cannot name connector resources and says
    how to fix it. An agent without a suite is a clear error naming the file to add."""
    ws = init_workspace(tmp_path / "ws")
    suite = '{"id": "c", "input": {"kind": "crm"}, "expect": {"calls": ["crm.get-customer"]}}\n'
    write_agent(ws.root, "bot", AGENT_PY, AGENT_TOML + 'trace = "minimal"\n', extra={"evals/c.jsonl": suite})
    write_agent(ws.root, "plain", AGENT_PY, AGENT_TOML)
    b = open_local(ws)
    try:
        _setup_connector(b)
        score = _score(b.run_eval("bot", files=snapshot_dir(ws.root / "agents" / "bot")).cases[0], "calls")
        assert not score.passed and "trace mode is minimal" in score.detail and "connectors.call" in score.detail
        b.deploy("plain", snapshot_dir(ws.root / "agents" / "plain"), "v1", "ada")
        with pytest.raises(NotFound) as info:
            b.run_eval("plain", "staging")
        assert "has no eval suite" in info.value.message and "agents/plain/evals/" in (info.value.hint or "")
        with pytest.raises(NotFound, match="not in production yet"):
            b.run_eval("plain", "production")
    finally:
        b.close()


def test_eval_runs_are_stored_and_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """Every rf eval is kept: rf evals list shows its totals, rf evals show the cases as rf eval printed them."""
    ws = _make_ws(tmp_path)
    b = open_local(ws)
    try:
        _setup_connector(b)
    finally:
        b.close()
    root = ws.root
    code, out, _ = _cli(monkeypatch, capsys, root, "evals", "list")
    assert code == 0 and "no eval runs yet" in out
    _cli(monkeypatch, capsys, root, "eval", "bot", "--local", "--case", "ok-equals")
    _cli(monkeypatch, capsys, root, "eval", "bot", "--local")
    code, out, _ = _cli(monkeypatch, capsys, root, "evals", "list", "bot", "--json")
    runs = json.loads(out)
    assert code == 0 and len(runs) == 2 and [r["total"] for r in runs][1] == 1  # newest first
    assert runs[0]["failed"] > 0 and runs[0]["cases"] == [] and runs[0]["commit"] == "working-copy"
    code, out, _ = _cli(monkeypatch, capsys, root, "evals", "show", runs[0]["id"], "--json")
    shown = json.loads(out)
    assert code == 1 and shown["id"] == runs[0]["id"] and len(shown["cases"]) == runs[0]["total"]
    assert {c["id"] for c in shown["cases"]} >= {"ok-equals", "bad-equals"}
    code, out, err = _cli(monkeypatch, capsys, root, "evals", "show", "ev_missing")
    assert code == 1 and "no eval run 'ev_missing'" in err
    code, out, _ = _cli(monkeypatch, capsys, root, "evals", "list", "--env", "production", "--json")
    assert json.loads(out) == []
