"""The release gate (issue 18 item 4): a plan runs the eval suite of every agent it changes on
staging's state and compares it with production's; a publish or promote with regressions is
refused unless accepted with a reason, which the release history records with the evidence.
Through the real CLI (in-process), and one case against a real `rf serve`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import run_rf, run_rf_here, start_server, write_agent
from rf.client import open_local
from rf.config import find_workspace, init_workspace

AGENT_TOML = 'description = "gate target"\nentrypoint = "agent:handle"\ntimeout_s = 20\n'
AGENT_PY = '''
def handle(input, ctx):
    input = input or {}
    if input.get("kind") == "prompt":
        return {"message": ctx.prompts.render("greeting", name=input.get("name", "world"))}
    return {"message": GREETING + ", " + input.get("name", "world")}

GREETING = "hello"
'''
SUITE = ('{"id": "greets", "input": {"name": "Ada"}, "expect": {"contains": "hello, Ada"}}\n'
         '{"id": "answers", "input": {"name": "Bob"}, "expect": {"contains": "Bob"}}\n')
#: a case production's suite lacks, failing on staging: a new failure, not a regression
NEW_FAILING = '{"id": "brand-new", "input": {"name": "Cy"}, "expect": {"contains": "goodbye"}}\n'
NEW_PASSING = '{"id": "also-answers", "input": {"name": "Di"}, "expect": {"contains": "Di"}}\n'


def _cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], cwd: Path,
         *args: str) -> tuple[int, str, str]:
    """`rf ARGS` in this process (rf.cli.app.run, as the console script calls it)."""
    from rf.cli import app as cli_app

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(sys, "argv", ["rf", *args])
    monkeypatch.setattr(cli_app.state, "workspace_dir", None)
    with pytest.raises(SystemExit) as info:
        cli_app.run()
    captured = capsys.readouterr()
    return int(info.value.code or 0), captured.out, captured.err


def _bot(root: Path, greeting: str = "hello", suite: str = SUITE, name: str = "bot") -> None:
    write_agent(root, name, AGENT_PY.replace('GREETING = "hello"', f'GREETING = "{greeting}"'), AGENT_TOML,
                extra={"evals/smoke.jsonl": suite} if suite else None)


def _eval_executions(root: Path, env: str) -> int:
    b = open_local(find_workspace(root))
    try:
        return sum(1 for e in b.list_executions(env=env, limit=1000) if e.source == "eval")
    finally:
        b.close()


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    """bot in production (hello) with a two-case suite that passes there."""
    ws = init_workspace(tmp_path / "ws")
    _bot(ws.root)
    assert _cli(monkeypatch, capsys, ws.root, "agents", "deploy", "bot")[0] == 0
    code, _out, err = _cli(monkeypatch, capsys, ws.root, "agents", "promote", "bot", "--yes")
    assert code == 0, err
    return ws


def test_regression_refused_then_accepted_with_reason_and_evidence_in_history(
        ws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = ws.root
    _bot(root, greeting="howdy", suite=SUITE + NEW_FAILING)  # breaks `greets`; adds a failing case
    assert _cli(monkeypatch, capsys, root, "agents", "deploy", "bot")[0] == 0
    before = _eval_executions(root, "production")

    code, out, err = _cli(monkeypatch, capsys, root, "releases", "plan", "agent:bot")
    assert code == 0, err
    assert "eval suites" in out and "2/2" in out and "1/3" in out  # production 2/2 → staging 1/3
    assert "greets" in out and "brand-new" in out
    assert "regressions (agent bot: greets)" in err and "--accept-regressions" in err
    plan_id = out.split("plan ", 1)[1].split()[0]
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "plan", "agent:bot", "--json")
    evidence = json.loads(out)["evals"][0]
    assert (evidence["agent"], evidence["status"]) == ("bot", "evaluated")
    assert (evidence["before_passed"], evidence["before_total"], evidence["after_passed"],
            evidence["after_total"]) == (2, 2, 1, 3)
    assert evidence["regressions"] == ["greets"] and evidence["new_failures"] == ["brand-new"]
    # production's commit ran its own suite in production, recorded as source eval
    assert _eval_executions(root, "production") - before == 4  # two plans x two production cases

    code, out, err = _cli(monkeypatch, capsys, root, "releases", "publish", "--plan", plan_id, "--yes")
    assert code == 1
    assert "refused" in err and "greets" in err and "--accept-regressions" in err
    b = open_local(find_workspace(root))
    try:
        assert b.get_agent("bot").production_commit != b.get_agent("bot").staging_commit  # nothing published
    finally:
        b.close()
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "publish", "--plan", plan_id, "--yes",
                          "--accept-regressions")
    assert code == 2 and '-m "why' in err  # the reason is required

    runs = _eval_executions(root, "staging")
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "publish", "--plan", plan_id, "--yes",
                          "--accept-regressions", "-m", "known: greeting copy changes next week")
    assert code == 0, err
    assert "published with eval regressions, accepted: known" in err
    assert _eval_executions(root, "staging") == runs  # the reviewed evidence, not a new run
    release_id = err.split("published release ", 1)[1].split()[0]
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "show", release_id, "--json")
    release = json.loads(out)
    assert release["accepted_regressions"] == "known: greeting copy changes next week"
    assert release["message"] == "known: greeting copy changes next week"
    assert release["evals"][0]["regressions"] == ["greets"] and release["evals"][0]["after_total"] == 3
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "show", release_id)
    assert "regressions accepted: known" in out and "greets" in out


def test_a_change_without_regressions_publishes_without_flags(
        ws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root = ws.root
    _bot(root, suite=SUITE + NEW_PASSING)
    assert _cli(monkeypatch, capsys, root, "agents", "deploy", "bot")[0] == 0
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "publish", "agent:bot", "--yes")
    assert code == 0, err
    assert "2/2" in err and "3/3" in err  # the evidence was shown before the publish
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "history", "--json")
    newest = json.loads(out)[0]
    assert newest["accepted_regressions"] is None
    assert newest["evals"][0]["regressions"] == [] and newest["evals"][0]["after_passed"] == 3


def test_promote_goes_through_the_same_gate(ws: Any, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    root = ws.root
    _bot(root, greeting="howdy")
    assert _cli(monkeypatch, capsys, root, "agents", "deploy", "bot")[0] == 0
    code, out, err = _cli(monkeypatch, capsys, root, "agents", "promote", "bot", "--yes")
    assert code == 1 and "greets" in err and "--accept-regressions" in err
    code, out, err = _cli(monkeypatch, capsys, root, "agents", "promote", "bot", "--yes", "--accept-regressions",
                          "-m", "intended", "--json")
    assert code == 0, err
    release_id = json.loads(out)["release_id"]
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "show", release_id, "--json")
    assert json.loads(out)["accepted_regressions"] == "intended"


def test_an_agent_affected_through_a_prompt_is_gated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    ws = init_workspace(tmp_path / "ws")
    suite = '{"id": "prompted", "input": {"kind": "prompt", "name": "Ada"}, "expect": {"contains": "hi Ada"}}\n'
    _bot(ws.root, suite=suite)
    b = open_local(ws)
    try:
        b.create_prompt("greeting", "hi {{name}}")
        b.publish_prompt("greeting")
    finally:
        b.close()
    assert _cli(monkeypatch, capsys, ws.root, "agents", "deploy", "bot")[0] == 0
    assert _cli(monkeypatch, capsys, ws.root, "agents", "promote", "bot", "--yes")[0] == 0
    b = open_local(ws)
    try:
        b.set_prompt("greeting", "bye {{name}}")
    finally:
        b.close()
    code, out, err = _cli(monkeypatch, capsys, ws.root, "releases", "plan", "prompt:greeting", "--json")
    evidence = json.loads(out)["evals"]
    assert [(e["agent"], e["regressions"]) for e in evidence] == [("bot", ["prompted"])]
    assert "affected through prompt greeting" in evidence[0]["note"]
    code, out, err = _cli(monkeypatch, capsys, ws.root, "releases", "publish", "prompt:greeting", "--yes")
    assert code == 1 and "prompted" in err
    # `rf prompts publish` is the same release (it holds the store's write lock meanwhile: no deadlock)
    done = run_rf("prompts", "publish", "greeting", "--yes", cwd=ws.root, timeout=30)
    assert done.returncode == 1 and "prompted" in done.stderr and "--accept-regressions" in done.stderr


def test_require_evals_refuses_an_agent_without_a_suite_and_no_suite_means_no_eval_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    ws = init_workspace(tmp_path / "ws")
    _bot(ws.root, suite="", name="plain")
    assert _cli(monkeypatch, capsys, ws.root, "agents", "deploy", "plain")[0] == 0
    code, out, err = _cli(monkeypatch, capsys, ws.root, "releases", "plan", "agent:plain", "--json")
    assert code == 0 and json.loads(out)["missing_suites"] == []
    assert _eval_executions(ws.root, "staging") == 0  # no suite: no eval work at all

    toml = ws.root / "rf.toml"
    toml.write_text(toml.read_text() + "\n[releases]\nrequire_evals = true\n")
    code, out, err = _cli(monkeypatch, capsys, ws.root, "releases", "plan", "agent:plain")
    assert code == 0 and "require_evals" in err
    code, out, err = _cli(monkeypatch, capsys, ws.root, "releases", "publish", "agent:plain", "--yes")
    assert code == 1 and "require_evals" in err and "plain" in err and "agents/plain/evals/" in err
    code, out, err = _cli(monkeypatch, capsys, ws.root, "agents", "promote", "plain", "--yes")
    assert code == 1 and "require_evals" in err

    toml.write_text(toml.read_text().replace("require_evals = true", 'require_evals = "yes"'))
    code, out, err = _cli(monkeypatch, capsys, ws.root, "releases", "plan", "agent:plain")
    assert code != 0 and "require_evals must be true or false" in err


def test_gate_through_a_real_server(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    root = ws.root
    _bot(root)
    assert run_rf("agents", "deploy", "bot", cwd=root).returncode == 0
    assert run_rf_here("agents", "promote", "bot", "--yes", cwd=root).returncode == 0
    _bot(root, greeting="howdy")
    assert run_rf_here("agents", "deploy", "bot", cwd=root).returncode == 0
    server = start_server(root)
    try:
        plan = run_rf_here("releases", "plan", "agent:bot", "--json", cwd=root)
        assert plan.returncode == 0, plan.stderr
        data = json.loads(plan.stdout)
        assert data["evals"][0]["regressions"] == ["greets"]
        refused = run_rf("releases", "publish", "--plan", data["id"], "--yes", cwd=root)
        assert refused.returncode == 1 and "greets" in refused.stderr and "--accept-regressions" in refused.stderr
        done = run_rf_here("releases", "publish", "--plan", data["id"], "--yes", "--accept-regressions", "-m", "known",
                      "--json", cwd=root)
        assert done.returncode == 0, done.stderr
        release = json.loads(done.stdout)
        assert release["accepted_regressions"] == "known" and release["evals"][0]["regressions"] == ["greets"]
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_evidence_belongs_to_the_state_a_fix_makes_the_old_plan_stale(
        ws: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Caught, fixed, published: the regressing plan's evidence does not outlive its state."""
    root = ws.root
    _bot(root, greeting="howdy")
    assert _cli(monkeypatch, capsys, root, "agents", "deploy", "bot")[0] == 0
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "plan", "agent:bot", "--json")
    old = json.loads(out)
    assert old["evals"][0]["regressions"] == ["greets"]
    _bot(root, greeting="hello", suite=SUITE + NEW_PASSING)  # the fix
    assert _cli(monkeypatch, capsys, root, "agents", "deploy", "bot")[0] == 0
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "publish", "--plan", old["id"], "--yes",
                          "--accept-regressions", "-m", "too late")
    assert code == 1 and "changed since you reviewed" in err
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "plan", "agent:bot", "--json")
    new = json.loads(out)
    assert new["id"] != old["id"] and new["evals"][0]["regressions"] == []
    assert new["evals"][0]["after_passed"] == new["evals"][0]["after_total"] == 3
    code, out, err = _cli(monkeypatch, capsys, root, "releases", "publish", "--plan", new["id"], "--yes")
    assert code == 0, err


SLOW_PY = '''
import time

def handle(input, ctx):
    time.sleep((input or {}).get("sleep", 0))
    return {"message": ctx.prompts.render("greeting", name="Ada")}
'''
SLOW_SUITE = '{"id": "slow", "input": {"sleep": 1}, "expect": {"contains": "Ada"}}\n'


def test_a_prompt_publish_runs_its_eval_gate_outside_the_write_lock(tmp_path: Path) -> None:
    """``rf prompts publish`` plans its one item (the gate's eval runs) before it takes the write
    lock, then publishes that plan by id: while the suite of an agent using the prompt runs,
    another write goes through (on PostgreSQL the lock is every server's). Ordering only."""
    import threading
    import time

    root = init_workspace(tmp_path / "ws").root
    write_agent(root, "bot", SLOW_PY, AGENT_TOML, extra={"evals/smoke.jsonl": SLOW_SUITE})
    b = open_local(find_workspace(root))
    order: list[str] = []
    try:
        from rf.config import snapshot_dir

        b.create_prompt("greeting", "hello {{ name }}")
        b.deploy("bot", snapshot_dir(root / "agents" / "bot"))
        b.publish_release(all=True, author="ada", message="first")
        b.set_prompt("greeting", "hi there {{ name }}")
        published: list[Any] = []

        def publish() -> None:
            published.append(b.publish_prompt("greeting", author="ada"))
            order.append("published")

        publisher = threading.Thread(target=publish)
        already = {e.id for e in b.list_executions(env="staging", limit=1000)}
        publisher.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(  # the gate's staging side has run: production's runs now
                e.source == "eval" and e.id not in already for e in b.list_executions(env="staging", limit=1000)):
            time.sleep(0.02)
        b.create_prompt("other", "written while the gate runs")
        order.append("other write")
        publisher.join(60)
    finally:
        b.close()
    assert order == ["other write", "published"], order
    (result,) = published
    assert result.changed and result.release_id
