"""Canary releases (issue 21): release N+1 on a share of production traffic beside release N,
sticky by session, one arm per execution, promoted or aborted (by hand or by the server) and
recorded in the history. Through one real `rf serve` for the module; each test ends its canary."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent
from rf.client import HttpBackend
from rf.config import find_workspace, init_workspace, snapshot_dir

#: A bot whose answer says which code and which prompt version ran (they must come from one arm).
BOT = '''
VERSION = 1
FAIL = False

def handle(input, ctx):
    if FAIL:
        raise RuntimeError("this release is broken")
    return {"message": "v%d" % VERSION, "v": VERSION, "prompt": ctx.prompts.render("greet", name="x")}
'''
RF_TOML_EXTRA = """
[releases.canary]
auto_abort = true
max_failure_rate_delta = 0.2
min_executions = 8
"""


class Site:
    def __init__(self, root: Path, server: ServerProc) -> None:
        self.root = root
        self.server = server
        self.b = HttpBackend(server.url, server.token, find_workspace(str(root)))
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.version = 1

    def deploy(self, version: int, *, fail: bool = False, prompt: str | None = None) -> None:
        """Agent `bot` v*version* in staging (and the prompt's draft, when given)."""
        code = BOT.replace("VERSION = 1", f"VERSION = {version}").replace("FAIL = False", f"FAIL = {fail}")
        write_agent(self.root, "bot", code)
        self.b.deploy("bot", snapshot_dir(self.root / "agents" / "bot"), f"v{version}", "tester")
        if prompt is not None:
            self.b.set_prompt("greet", prompt, "tester", f"for v{version}")

    def call(self, session: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"input": {}}
        if session is not None:
            body["session_id"] = session
        r = self.http.post("/production/agents/bot", json=body)
        assert r.status_code in (200, 500), r.text
        return dict(r.json())

    def start(self, percent: float, items: list[str]) -> Any:
        return self.b.publish_release(items, False, None, "", "tester", False, False, False, percent)

    def end(self) -> None:
        """Abort a canary a test left running (so the next test starts clean)."""
        try:
            self.b.abort_canary("test cleanup", "tester")
        except Exception:
            pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    ws = init_workspace(tmp_path_factory.mktemp("canary") / "ws")
    with (ws.root / "rf.toml").open("a") as f:
        f.write(RF_TOML_EXTRA)
    write_agent(ws.root, "bot", BOT)
    server = start_server(ws.root)
    s = Site(ws.root, server)
    try:
        s.b.create_prompt("greet", "one {{name}}", "tester", "first")
        s.deploy(1)
        s.b.publish_release(["agent:bot", "prompt:greet"], False, None, "first", "tester")
        yield s
    finally:
        s.http.close()
        s.b.close()
        server.stop()


@pytest.fixture
def canary_site(site: Site) -> Iterator[Site]:
    try:
        yield site
    finally:
        site.end()


def _next(site: Site, **kwargs: Any) -> int:
    site.version += 1
    site.deploy(site.version, **kwargs)
    return site.version


def test_sticky_sessions_and_one_arm_per_execution(canary_site: Site) -> None:
    """100 sessions × 3 calls at 50 %: every session sees one release, code and prompt from
    the same arm; the canary's share of sessions is within a sane binomial bound."""
    s = canary_site
    stable = s.call()["output"]["v"]
    v = _next(s, prompt="two {{name}}")
    release = s.start(50, ["agent:bot", "prompt:greet"])
    assert release.kind == "canary" and release.weight == 50
    assert s.b.get_agent("bot").production_commit != s.b.get_agent("bot").staging_commit  # production unchanged

    def session(n: int) -> set[tuple[int, str]]:
        return {(out["output"]["v"], out["output"]["prompt"]) for out in (s.call(f"user-{n}") for _ in range(3))}

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(session, range(100)))
    assert all(len(one) == 1 for one in seen), [one for one in seen if len(one) != 1]
    pairs = {next(iter(one)) for one in seen}
    assert pairs == {(stable, "one x"), (v, "two x")}  # never v2's code with v1's prompt, nor the reverse
    on_canary = sum(1 for one in seen if next(iter(one))[0] == v)
    assert 30 <= on_canary <= 70, on_canary  # binomial(100, 0.5): ±4 standard deviations
    # Each execution records its release and arm; the lists filter by them.
    canary_runs = s.b.list_executions("production", "bot", None, None, 1000, None, release.id)
    assert {(e.arm, e.release_id, e.output["v"]) for e in canary_runs} == {("canary", release.id, v)}
    assert len(canary_runs) == 3 * on_canary
    stable_runs = s.b.list_executions("production", "bot", None, None, 1000, None, None, "stable")
    assert {e.output["v"] for e in stable_runs} == {stable} and len(stable_runs) == 3 * (100 - on_canary)
    sessions = s.b.list_sessions("production", "bot", 1000, None, "canary")
    assert len(sessions) == on_canary and {x.release_id for x in sessions} == {release.id}
    traces = s.b.list_traces("production", "bot", None, 1000, release.id)
    assert len(traces) == 3 * on_canary and {t.arm for t in traces} == {"canary"}
    status = s.b.canary_status()
    assert [(a.arm, a.executions) for a in status.arms] == [("stable", 3 * (100 - on_canary)),
                                                            ("canary", 3 * on_canary)]


def test_per_request_routing_without_sessions_and_every_surface(canary_site: Site) -> None:
    import anyio
    from mcp import Client
    from openai import OpenAI

    s = canary_site
    stable = s.call()["output"]["v"]
    v = _next(s)
    s.start(50, ["agent:bot"])
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda _: s.call()["output"]["v"], range(200)))
    share = got.count(v) / len(got)
    assert set(got) == {stable, v} and 0.35 <= share <= 0.65, share
    # The OpenAI-compatible and MCP surfaces route the same way (decided in the service layer).
    client = OpenAI(base_url=f"{s.server.url}/production/v1", api_key="unused", max_retries=0)

    async def mcp_call() -> Any:
        async with Client(f"{s.server.url}/production/mcp") as mcp:
            return (await mcp.call_tool("bot", {})).structured_content["v"]

    for weight, expected in ((100, v), (0, stable)):
        s.b.set_canary_weight(weight, "", "tester")
        answers = {client.chat.completions.create(model="bot", messages=[{"role": "user", "content": "hi"}])
                   .choices[0].message.content for _ in range(3)}
        assert answers == {f"v{expected}"}
        assert anyio.run(mcp_call) == expected
    runs = s.b.list_executions("production", "bot", None, "openai", 6)
    assert [e.arm for e in runs] == ["stable"] * 3 + ["canary"] * 3


def test_refusals_one_canary_at_a_time_triggers_and_canaried_items(canary_site: Site) -> None:
    s = canary_site
    _next(s)
    # A plan with a trigger is refused with --canary, naming what to publish separately.
    t = s.b.create_trigger("bot", "webhook")
    copy = s.b.duplicate_trigger(t.id, "production")
    plan = s.b.plan_release([f"trigger:{copy.id}", "agent:bot"])
    r = run_rf("releases", "publish", "--plan", plan.id, "--canary", "20", "--yes", cwd=s.root)
    assert r.returncode != 0
    assert "not canaried" in r.stderr and f"rf releases publish trigger:{copy.id}" in r.stderr, r.stderr
    s.b.delete_trigger(copy.id)
    s.b.delete_trigger(t.id)
    started = s.start(20, ["agent:bot"])
    assert (started.kind, started.weight, started.canary) == ("canary", 20, started.id)
    # One canary at a time; a publish of what the canary holds waits for its decision.
    s.b.set_prompt("greet", "three {{name}}", "tester", "")
    with pytest.raises(Exception, match="one canary at a time"):
        s.start(10, ["prompt:greet"])
    with pytest.raises(Exception, match="cannot change while the canary runs"):
        s.b.publish_release(["agent:bot"], False, None, "", "tester")
    s.b.publish_release(["prompt:greet"], False, None, "", "tester")  # what it does not hold: fine


def test_weight_promote_abort_in_history_and_rollback(canary_site: Site) -> None:
    s = canary_site
    before = s.call()["output"]["v"]
    v = _next(s)
    first = s.start(10, ["agent:bot"])
    r = run_rf("releases", "canary", "weight", "60", "-m", "looks fine", "--yes", cwd=s.root)
    assert r.returncode == 0, r.stderr
    assert s.b.canary_status().weight == 60
    s.b.abort_canary("changed my mind", "tester")
    assert {s.call(f"u{n}")["output"]["v"] for n in range(20)} == {before}  # all back on stable at once
    second = s.start(30, ["agent:bot"])
    r = run_rf_here("releases", "canary", "promote", "--yes", "--json", cwd=s.root)
    assert r.returncode == 0, r.stderr
    promoted = json.loads(r.stdout)
    assert promoted["kind"] == "canary-promote" and promoted["canary"] == second.id
    assert {s.call(f"u{n}")["output"]["v"] for n in range(20)} == {v}  # the whole of production
    assert s.call("u1")["execution_id"] and s.b.get_agent("bot").production_commit == s.b.get_agent("bot").staging_commit
    kinds = [(x.kind, x.canary) for x in s.b.list_releases(6)][:5]
    assert kinds == [("canary-promote", second.id), ("canary", second.id),
                     ("canary-abort", first.id), ("canary-weight", first.id), ("canary", first.id)]
    messages = [x.message for x in s.b.list_releases(5)]
    assert f"canary {first.id}: weight 10 % → 60 % (looks fine)" in messages
    assert f"abort canary {first.id}: changed my mind" in messages
    # A canary release never changed production: nothing to roll back; the promote rolls back as usual.
    with pytest.raises(Exception, match="never changed production"):
        s.b.rollback_release(first.id, False, "", "tester")
    back = s.b.rollback_release(promoted["id"], False, "undo", "tester")
    assert back.kind == "rollback"
    assert {s.call(f"u{n}")["output"]["v"] for n in range(5)} == {before}
    assert s.b.list_executions("production", "bot", None, None, 1)[0].arm is None  # no canary: no arm


def test_auto_abort_of_a_failing_canary_and_the_stats_json(canary_site: Site) -> None:
    s = canary_site
    before = s.call()["output"]["v"]
    _next(s, fail=True)
    release = s.start(50, ["agent:bot"])
    failures = 0
    deadline = time.monotonic() + 30
    status = s.b.canary_status()
    while status.status == "running" and time.monotonic() < deadline:
        with ThreadPoolExecutor(4) as pool:
            failures += sum(1 for out in pool.map(lambda _: s.call(), range(16)) if out["status"] == "failed")
        status = s.b.canary_status()
        if status.status == "running":
            time.sleep(0.2)  # (the server's check runs at most once a second)
    assert status.status == "aborted" and failures >= 8, (status.status, failures)
    assert status.ended_by == "rf (auto-abort)" and status.figures is not None
    figures = {a["arm"]: a for a in status.figures["arms"]}
    assert figures["canary"]["executions"] >= 8 and figures["canary"]["failure_rate"] == 1.0
    assert figures["stable"]["failures"] == 0
    aborted = s.b.get_release(str(status.end_release_id))
    assert aborted.kind == "canary-abort" and "auto-abort" in aborted.message and aborted.figures is not None
    assert {s.call(f"u{n}")["output"]["v"] for n in range(10)} == {before}  # back on stable
    # The stats, as JSON: per arm counts, rates with intervals, p50/p95, the difference and a verdict.
    r = run_rf("releases", "canary", "--json", cwd=s.root)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["id"] == release.id and stats["status"] == "aborted"
    canary, stable = stats["arms"][1], stats["arms"][0]
    assert (stable["arm"], canary["arm"]) == ("stable", "canary")
    assert canary["failures"] == canary["executions"] >= 8 and canary["failure_rate"] == 1.0
    assert 0 < canary["failure_rate_low"] <= 1.0 == canary["failure_rate_high"]
    assert stable["p50_ms"] is not None and stable["p95_ms"] >= stable["p50_ms"]
    assert stats["delta_low"] > 0 and stats["verdict"] == "canary worse"
    assert stats["auto_abort"] == {"auto_abort": True, "max_failure_rate_delta": 0.2, "min_executions": 8,
                                   "max_score_delta": None, "min_scored": 20}


def test_canary_settings_are_checked(tmp_path: Path) -> None:
    from rf.config import load_workspace
    from rf.errors import WorkspaceError

    ws = init_workspace(tmp_path / "ws")
    text = (ws.root / "rf.toml").read_text()
    for table, message in (("max_failure_rate_delta = 5", "max_failure_rate_delta must be a number from 0 to below 1"),
                           ("auto_abort = 1", "auto_abort must be true or false"),
                           ("min_executions = 0", "min_executions must be a whole number of at least 1"),
                           ("score_sample = 1.5", "score_sample must be a number from 0 to 1 "),
                           ("score_sample = 0.5\nmax_score_delta = true", "max_score_delta must be a number from 0 to below 1"),
                           ("score_sample = 0.5\nmin_scored = 1", "min_scored must be a whole number of at least 2"),
                           ("min_executon = 3", "min_executions")):  # (did you mean)
        (ws.root / "rf.toml").write_text(text + f"\n[releases.canary]\n{table}\n")
        with pytest.raises(WorkspaceError, match=message):
            load_workspace(ws.root)
    (ws.root / "rf.toml").write_text(text + "\n[releases.canary]\nauto_abort = true\nmin_executions = 3\n")
    assert load_workspace(ws.root).canary.min_executions == 3
