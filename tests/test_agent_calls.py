"""Agents calling agents (``ctx.agents.invoke``), through a real `rf serve`, `rf test` and the CLI.

The agent called runs its commit of the caller's environment (staging's under `rf test`) as a
child execution: ``parent_id`` and source ``agent:<caller>``, the caller's trace id; cycles and
chains deeper than the limit are refused before anything runs; the child gets at most the time
the caller has left; its failure is an ``rf.AgentCallError`` the caller can catch. Releases count
agent → agent uses: promoting an agent whose callee production lacks warns, is refused under
``--strict``, and ``--with-deps`` promotes both."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent
from rf.client import Backend, HttpBackend
from rf.errors import InvalidAgent

ACTOR = {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "user.name", "GIT_CONFIG_VALUE_0": "Ada Lovelace"}

TOML = 'description = "{name}"\nentrypoint = "agent:handle"\ntimeout_s = {timeout}\n'

ECHO = (
    "VERSION = {version!r}\n"
    "def handle(input, ctx):\n"
    "    return {{'version': VERSION, 'got': input, 'env': ctx.env, 'id': ctx.execution_id}}\n"
)
#: Calls the agent named in its input; catches the child's failure and says what it was.
CALLER = (
    "from rf import AgentCallError\n"
    "def handle(input, ctx):\n"
    "    try:\n"
    "        answer = ctx.agents.invoke(input['call'], input.get('input'))\n"
    "    except AgentCallError as exc:\n"
    "        return {'caught': exc.message, 'child': exc.execution_id, 'error': exc.error,\n"
    "                'error_type': exc.error_type, 'agent': exc.agent}\n"
    "    return {'answer': answer, 'me': ctx.execution_id}\n"
)
#: Calls the first agent of input['rest'] with the rest (uncaught failures fail it too).
CHAIN = (
    "def handle(input, ctx):\n"
    "    rest = input['rest']\n"
    "    if not rest:\n"
    "        return {'bottom': ctx.agent}\n"
    "    return ctx.agents.invoke(rest[0], {'rest': rest[1:]})\n"
)
BOOM = "def handle(input, ctx):\n    raise ValueError('boom 42')\n"
SLOW = (
    "import time\n"
    "def handle(input, ctx):\n"
    "    while True:\n"
    "        time.sleep(0.02)\n"
)


def files(code: str, toml: str) -> dict[str, bytes]:
    return {"agent.toml": toml.encode(), "agent.py": code.encode()}


def deploy(b: Backend, root: Path, name: str, code: str, timeout: float = 20, toml: str | None = None) -> str:
    """Write agents/NAME (so `rf test` finds it) and deploy it to staging; its commit id."""
    toml = toml if toml is not None else TOML.format(name=name, timeout=timeout)
    write_agent(root, name, code, toml)
    return b.deploy(name, files(code, toml), "deploy", "tester").commit.id


class Site:
    def __init__(self, server: ServerProc, root: Path, b: Backend) -> None:
        self.server = server
        self.root = root
        self.b = b
        self.commits: dict[str, str] = {}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """One server: ``echo`` "one" in production and "two" in staging; ``caller`` in both (the
    same code); ``boom``, ``slow``, ``hasty`` (the caller with a 2.5-second timeout) and
    ``c1``..``c6`` (CHAIN) in staging."""
    from rf.config import init_workspace

    base: Path = tmp_path_factory.mktemp("agent-calls")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(base / "xdg-data"))
        ws = init_workspace(base / "ws")
        server = start_server(ws.root, extra_env={"XDG_DATA_HOME": str(base / "xdg-data")})
    b = cast(Backend, HttpBackend(server.url, server.token, ws))
    site = Site(server, ws.root, b)
    try:
        site.commits["echo@production"] = deploy(b, ws.root, "echo", ECHO.format(version="one"))
        deploy(b, ws.root, "caller", CALLER)
        b.promote("echo", "tester")
        b.promote("caller", "tester")
        site.commits["echo@staging"] = deploy(b, ws.root, "echo", ECHO.format(version="two"))
        deploy(b, ws.root, "boom", BOOM)
        deploy(b, ws.root, "slow", SLOW, timeout=60)
        deploy(b, ws.root, "hasty", CALLER, timeout=2.5)
        for n in range(1, 7):
            deploy(b, ws.root, f"c{n}", CHAIN)
        yield site
    finally:
        server.stop()


def executions(site: Site, env: str, agent: str) -> list[Any]:
    return site.b.list_executions(env, agent, None, None, 50)


def test_staging_caller_runs_the_callees_staging_commit_as_a_child_execution(site: Site) -> None:
    b = site.b
    parent = b.invoke("staging", "caller", {"call": "echo", "input": {"q": 1}}, None)
    assert parent.status == "succeeded", parent.error
    answer = parent.output["answer"]
    assert answer["version"] == "two" and answer["env"] == "staging" and answer["got"] == {"q": 1}
    child = b.get_execution(answer["id"], "staging")
    assert child.parent_id == parent.id and child.source == "agent:caller"
    assert child.commit == site.commits["echo@staging"] and child.env == "staging"
    assert parent.parent_id is None
    # The list shows it (the API's JSON carries parent_id), and `--source agent` finds it.
    listed = {e.id: e for e in b.list_executions("staging", "echo", None, "agent", 50)}
    assert listed[child.id].parent_id == parent.id and listed[child.id].source == "agent:caller"
    # `rf executions show` names the parent.
    r = run_rf("executions", "show", child.id, cwd=site.root)
    assert r.returncode == 0, r.stderr
    assert f"parent    {parent.id}" in r.stdout and "agent:caller" in r.stdout


def test_production_caller_runs_the_callees_production_commit(site: Site) -> None:
    parent = site.b.invoke("production", "caller", {"call": "echo", "input": "hi"}, None)
    assert parent.status == "succeeded", parent.error
    answer = parent.output["answer"]
    assert answer["version"] == "one" and answer["env"] == "production"
    child = site.b.get_execution(answer["id"], "production")
    assert child.parent_id == parent.id and child.commit == site.commits["echo@production"]
    # Never the other environment's: no staging execution of echo has this parent.
    assert all(e.parent_id != parent.id for e in executions(site, "staging", "echo"))


def test_rf_test_runs_the_working_copy_and_the_callees_deployed_staging_commit(site: Site) -> None:
    # The working copy of caller differs from its deployed commit: rf test runs the working copy.
    write_agent(site.root, "caller", CALLER.replace("'me'", "'working'"), TOML.format(name="caller", timeout=20))
    r = run_rf("test", "caller", json.dumps({"call": "echo"}), "--json", cwd=site.root)
    assert r.returncode == 0, r.stderr
    parent = json.loads(r.stdout)
    assert parent["commit"] == "working-copy" and parent["source"] == "test"
    assert "working" in parent["output"], parent["output"]
    answer = parent["output"]["answer"]
    assert answer["version"] == "two"  # echo's staging commit, not production's "one"
    child = site.b.get_execution(answer["id"], "staging")
    assert child.parent_id == parent["id"] and child.commit == site.commits["echo@staging"]


def test_one_trace_across_the_caller_and_the_child(site: Site) -> None:
    parent = site.b.invoke("staging", "caller", {"call": "echo"}, None)
    child_id = parent.output["answer"]["id"]
    parent_trace = site.b.get_trace(parent.id, "staging")
    child_trace = site.b.get_trace(child_id, "staging")
    assert child_trace.trace_id == parent_trace.trace_id
    call = next(s for s in parent_trace.spans if s.name == "agents.invoke")
    assert call.kind == "agent" and call.attributes["child_execution_id"] == child_id
    # The child's run happened inside the caller's call span.
    child_root = next(s for s in child_trace.spans if s.parent_id is None)
    assert call.start_ns <= child_root.start_ns and child_root.end_ns <= call.end_ns
    assert child_root.attributes["parent_execution_id"] == parent.id
    # The caller's trace is the whole tree: the child's spans hang under the call span.
    in_parent = {s.span_id: s for s in parent_trace.spans}
    assert child_root.span_id in in_parent and in_parent[child_root.span_id].parent_id == call.span_id
    assert {s.span_id for s in child_trace.spans} <= set(in_parent)
    assert sum(1 for s in parent_trace.spans if s.parent_id is None) == 1


def test_child_failure_is_an_agent_call_error_the_caller_catches(site: Site) -> None:
    parent = site.b.invoke("staging", "caller", {"call": "boom"}, None)
    assert parent.status == "succeeded", parent.error
    out = parent.output
    assert out["agent"] == "boom" and out["error_type"] == "exception"
    assert "ValueError: boom 42" in out["error"] and out["child"] in out["caught"]
    child = site.b.get_execution(out["child"], "staging")
    assert child.status == "failed" and child.parent_id == parent.id
    # The caller's span of the call failed and points at the child.
    call = next(s for s in site.b.get_trace(parent.id, "staging").spans if s.name == "agents.invoke")
    assert call.status == "error" and call.attributes["child_execution_id"] == child.id


def test_an_agent_not_in_the_environment_is_a_clear_error(site: Site) -> None:
    parent = site.b.invoke("production", "caller", {"call": "boom"}, None)  # boom is staging-only
    assert parent.status == "failed"
    assert "agent 'boom' is not in production yet" in (parent.error or "")


def test_chain_within_the_depth_limit_runs_and_deeper_is_refused(site: Site) -> None:
    ok = site.b.invoke("staging", "c1", {"rest": ["c2", "c3", "c4", "c5"]}, None)  # depth 4
    assert ok.status == "succeeded" and ok.output == {"bottom": "c5"}, ok.error
    before = len(executions(site, "staging", "c6"))
    deep = site.b.invoke("staging", "c1", {"rest": ["c2", "c3", "c4", "c5", "c6"]}, None)
    assert deep.status == "failed"
    assert "agent call depth limit (4) reached: c1 → c2 → c3 → c4 → c5 → c6" in (deep.error or "")
    assert len(executions(site, "staging", "c6")) == before  # refused before it ran


def test_a_cycle_is_refused_naming_the_chain(site: Site) -> None:
    before = len(executions(site, "staging", "c1"))
    cycle = site.b.invoke("staging", "c1", {"rest": ["c2", "c1"]}, None)
    assert cycle.status == "failed"
    assert "agent call cycle refused: c1 → c2 → c1" in (cycle.error or "")
    assert len(executions(site, "staging", "c1")) == before + 1  # only the outer c1 ran
    # Calling itself is the shortest cycle.
    me = site.b.invoke("staging", "caller", {"call": "caller"}, None)
    assert me.status == "succeeded" and "agent call cycle refused: caller → caller" in me.output["caught"]
    assert me.output["child"] is None


def test_the_child_gets_at_most_the_time_the_caller_has_left(site: Site) -> None:
    # hasty times out after 2.5 s; slow (60 s) would loop for ever: it is stopped within hasty's
    # time (80% of what hasty had left), early enough for hasty to catch the failure and answer.
    parent = site.b.invoke("staging", "hasty", {"call": "slow"}, None)
    assert parent.status == "succeeded", parent.error
    assert parent.output["error_type"] == "timeout", parent.output
    child = site.b.get_execution(parent.output["child"], "staging")
    assert child.status == "failed" and child.error_type == "timeout" and child.parent_id == parent.id
    assert child.duration_ms < 2500 and parent.duration_ms < 2500


# ---------------------------------------------------------------- releases


@pytest.fixture
def release_site(ws: Any) -> Iterator[tuple[Path, Backend]]:
    server = start_server(ws.root)
    try:
        yield ws.root, cast(Backend, HttpBackend(server.url, server.token, ws))
    finally:
        server.stop()


def rf(*args: str, cwd: Path, code: int = 0, run: Any = run_rf) -> str:
    r = run(*args, cwd=cwd, env=ACTOR)
    assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout + r.stderr


def test_promoting_a_caller_whose_callee_is_not_in_production(release_site: tuple[Path, Backend]) -> None:
    root, b = release_site
    deploy(b, root, "helper", ECHO.format(version="h1"))
    deploy(b, root, "needy", CALLER.replace("input['call']", "'helper'"))  # found in its code
    plan = b.plan_release(["agent:needy"], False, False, False)
    assert [f"{i.kind}:{i.name}" for i in plan.missing_dependencies] == ["agent:helper"]
    assert any("agent needy uses agent helper" in w for w in plan.warnings), plan.warnings
    out = rf("agents", "promote", "needy", "--strict", "--yes", cwd=root, code=1)
    assert "refused (--strict)" in out and "agent helper" in out
    agents = {a.name: a for a in b.list_agents()}
    assert agents["needy"].production_commit is None  # refused: nothing changed
    out = rf("agents", "promote", "needy", "--with-deps", "--yes", cwd=root, run=run_rf_here)  # (in-process)
    agents = {a.name: a for a in b.list_agents()}
    assert agents["needy"].production_commit == agents["needy"].staging_commit
    assert agents["helper"].production_commit == agents["helper"].staging_commit
    # And production's needy now reaches production's helper.
    ran = b.invoke("production", "needy", {}, None)
    assert ran.status == "succeeded" and ran.output["answer"]["version"] == "h1", ran.error


def test_declared_uses_agents_count_and_are_checked(release_site: tuple[Path, Backend]) -> None:
    root, b = release_site
    toml = TOML.format(name="planner", timeout=10) + '[uses]\nagents = ["ghost"]\n'
    deploy(b, root, "planner", ECHO.format(version="p"), toml=toml)  # its code names no agent
    plan = b.plan_release(["agent:planner"], False, False, False)
    assert plan.unavailable == ["agent ghost"], plan
    out = rf("agents", "promote", "planner", "--strict", "--yes", cwd=root, code=1)
    assert "agent ghost" in out
    # A malformed declaration is refused at deploy, saying what to write.
    with pytest.raises(InvalidAgent, match=r"uses.agents must be a list of agent names"):
        deploy(b, root, "planner", ECHO.format(version="p"),
               toml=TOML.format(name="planner", timeout=10) + '[uses]\nagents = "ghost"\n')


def test_removing_a_callee_production_still_calls_is_refused_under_strict(
        release_site: tuple[Path, Backend]) -> None:
    root, b = release_site
    deploy(b, root, "helper", ECHO.format(version="h1"))
    deploy(b, root, "needy", CALLER.replace("input['call']", "'helper'"))
    b.promote("needy", "tester", "", True)  # with its dependency
    b.delete_agent("helper", "staging")
    out = rf("releases", "publish", "agent:helper", "--strict", "--yes", cwd=root, code=1)
    assert "agent needy" in out
