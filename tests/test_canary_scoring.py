"""Canary releases, second part (issue 21): live eval scoring of both arms (a suite's ``live:``
entry, ``[releases.canary] score_sample``), an agent new in production through a canary on every
surface, running executions' release and arm, and ``canary_running``. Through one real `rf serve`
for the module; each test ends its canary."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, start_server, write_agent
from rf.client import HttpBackend
from rf.config import find_workspace, init_workspace, snapshot_dir

#: A bot whose output has the shape its suite's live entry expects (SHAPE "message"), or not.
BOT = '''
import time
VERSION = 1
SHAPE = "message"

def handle(input, ctx):
    time.sleep((input or {}).get("sleep", 0))
    return {SHAPE: "hi", "v": VERSION}
'''
SUITE = """
- live:
    json_schema: {type: object, required: [message], properties: {message: {type: string}}}
    not_contains: Traceback
    max_ms: 60000
    judge: 'says "hi"'
- id: smoke
  input: {}
  expect: {contains: hi}
"""
RF_TOML_EXTRA = """
[releases.canary]
score_sample = 1.0
"""


class Site:
    def __init__(self, root: Path, server: ServerProc) -> None:
        self.root = root
        self.server = server
        self.b = HttpBackend(server.url, server.token, find_workspace(str(root)))
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.version = 1

    def deploy(self, shape: str = "message", name: str = "bot", suite: str = SUITE) -> int:
        self.version += 1
        code = BOT.replace("VERSION = 1", f"VERSION = {self.version}").replace('"message"', repr(shape))
        write_agent(self.root, name, code, extra={"evals/live.yaml": suite})
        self.b.deploy(name, snapshot_dir(self.root / "agents" / name), f"v{self.version}", "tester")
        return self.version

    def call(self, session: str | None = None, name: str = "bot", **input: Any) -> httpx.Response:
        body: dict[str, Any] = {"input": input}
        if session is not None:
            body["session_id"] = session
        return self.http.post(f"/production/agents/{name}", json=body)

    def start(self, percent: float, items: list[str]) -> Any:
        return self.b.publish_release(items, False, None, "", "tester", False, False, False, percent)

    def end(self) -> None:
        try:
            self.b.abort_canary("test cleanup", "tester")
        except Exception:
            pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    ws = init_workspace(tmp_path_factory.mktemp("canary-scoring") / "ws")
    with (ws.root / "rf.toml").open("a") as f:
        f.write(RF_TOML_EXTRA)
    write_agent(ws.root, "bot", BOT, extra={"evals/live.yaml": SUITE})
    server = start_server(ws.root)
    s = Site(ws.root, server)
    try:
        s.deploy()
        s.b.publish_release(["agent:bot"], False, None, "first", "tester")
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


def _wait(what: Any, timeout: float = 10.0) -> Any:
    """Poll ``what()`` until it answers something true (the live scorer runs on its own thread)."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_a_canary_that_breaks_the_live_schema_scores_worse(canary_site: Site) -> None:
    s = canary_site
    s.deploy(shape="text")  # the canary answers {"text": ...}: the live json_schema fails, the rest passes
    release = s.start(50, ["agent:bot"])
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: s.call(), range(48)))
    assert {r.status_code for r in answers} == {200}
    by_arm = {"v": 0, "text": 0}
    for r in answers:
        by_arm["text" if "text" in r.json()["output"] else "v"] += 1
    assert min(by_arm.values()) >= 8, by_arm  # binomial(48, 0.5): far inside

    def scored() -> Any:
        status = s.b.canary_status()
        return status if sum(a.scored for a in status.arms) == len(answers) else None

    status = _wait(scored)
    assert status is not None, s.b.canary_status()
    stable, canary = status.arms
    assert (stable.scored, canary.scored) == (by_arm["v"], by_arm["text"])  # every execution (score_sample 1)
    assert stable.score_mean == 1.0 and stable.score_passed == stable.scored
    assert canary.score_mean == 0.75 and canary.score_passed == 0  # 3 of the 4 live scorers pass
    assert canary.score_high is not None and stable.score_low is not None and canary.score_high < stable.score_low
    assert stable.failures == canary.failures == 0  # the verdict comes from the scores alone
    assert status.score_delta == -0.25 and status.score_delta_high is not None and status.score_delta_high < 0
    assert status.verdict == "canary worse"
    assert any(r.startswith("live score: canary 0.75 vs stable 1.00") and r.endswith("canary worse")
               for r in status.reasons), status.reasons
    miss = status.score_misses[0]
    assert miss["arm"] == "canary" and miss["agent"] == "bot"
    assert [x["scorer"] for x in miss["scores"] if not x["passed"]] == ["json_schema"]
    assert status.score_sample == 1.0 and status.score_dropped == 0
    # The same figures through the CLI: JSON, and the table.
    r = run_rf("releases", "canary", "--json", cwd=s.root)
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout)
    assert stats["id"] == release.id and stats["verdict"] == "canary worse"
    assert [a["score_mean"] for a in stats["arms"]] == [1.0, 0.75]
    r = run_rf("releases", "canary", cwd=s.root)
    assert r.returncode == 0, r.stderr
    assert "live score canary − stable: -0.25" in r.stdout and "verdict: canary worse" in r.stdout, r.stdout
    # An abort records the score figures with the rest.
    aborted = s.b.abort_canary("schema broken", "tester")
    assert aborted.figures is not None and aborted.figures["score_delta"] == -0.25


def test_a_bad_live_entry_fails_the_deploy(site: Site) -> None:
    from rf.errors import InvalidAgent
    from rf.evals.suite import load_suite

    for suite, message in (
            ("- live: {equals: 1}\n", "equals does not apply to live output"),
            ("- live: {json_schema: 3}\n", "json_schema: expected a JSON Schema object"),
            ("- live: {nope: 1}\n", "unknown scorer 'nope'"),
            ("- live: {max_ms: 5}\n  id: x\n", "unknown key 'id'"),
            ("- live: {max_ms: 5}\n- live: {max_ms: 6}\n", r"a second live entry \(the first is at .*a.yaml:1\)"),
    ):
        with pytest.raises(InvalidAgent, match=message):
            load_suite({"evals/a.yaml": suite.encode()}, "bot")
    loaded = load_suite({"evals/a.yaml": b"- live: {regex: '^x', max_ms: 5}\n- {id: c, input: 1}\n"}, "bot")
    assert set(loaded.live or {}) == {"regex", "max_ms"} and [c.id for c in loaded.cases] == ["c"]
    assert loaded.live_at == "agents/bot/evals/a.yaml:1"
    # Checked at deploy, through the server, with the file and line.
    write_agent(site.root, "bad", BOT, extra={"evals/live.yaml": "- id: c\n  input: 1\n- live:\n    equals: 1\n"})
    with pytest.raises(Exception, match=r"evals/live.yaml:4: the live entry: equals does not apply"):
        site.b.deploy("bad", snapshot_dir(site.root / "agents" / "bad"), "bad", "tester")


def test_scoring_never_blocks_a_full_queue_drops_and_counts() -> None:
    from rf.models import Execution
    from rf.services.canary_scoring import LiveScorer

    scorer = LiveScorer(None, sample=1.0, maxsize=2)  # not started: nothing takes from the queue

    def ex(n: int, **kw: Any) -> Execution:
        return Execution(id=f"ex{n}", env="production", agent="bot", commit="c", source="endpoint",
                         status=kw.get("status", "succeeded"), arm="canary")

    for n in range(5):
        scorer.offer(ex(n))
    scorer.offer(ex(9, status="failed"))  # failures are the failure rate's: never queued
    assert scorer._queue.qsize() == 2 and scorer._dropped == 3
    off = LiveScorer(None, sample=0.0)
    off.offer(ex(1))
    assert off._queue.qsize() == 0 and off._dropped == 0
    # An agent without a live entry is skipped while that canary runs, looked at again under the next.
    from types import SimpleNamespace

    routing = SimpleNamespace(canary_id="rel_a")
    services = SimpleNamespace(routing=SimpleNamespace(cached=routing))
    skip = LiveScorer(services, sample=1.0)
    skip._unscored = ("rel_a", frozenset({"bot"}))
    skip.offer(ex(1))
    assert skip._queue.qsize() == 0
    routing.canary_id = "rel_b"
    skip.offer(ex(2))
    assert skip._queue.qsize() == 1


def test_the_score_interval_needs_evidence() -> None:
    from rf.services.canary_scoring import difference

    # One execution each way proves nothing ...
    d, low, high = difference((1, 0.0, 0.0), (1, 1.0, 1.0))
    assert d == -1.0 and low < 0 < high
    # ... twenty each way does.
    d, low, high = difference((20, 0.0, 0.0), (20, 20.0, 20.0))
    assert d == -1.0 and high < 0
    d, low, high = difference((20, 10.0, 10.0), (20, 10.0, 10.0))
    assert d == 0 and low < 0 < high


def test_an_agent_new_through_the_canary_on_every_surface(canary_site: Site) -> None:
    from openai import NotFoundError, OpenAI

    s = canary_site
    s.deploy(name="newbie")
    s.start(50, ["agent:newbie"])
    s.b.set_canary_weight(100, "", "tester")
    client = OpenAI(base_url=f"{s.server.url}/production/v1", api_key="unused", max_retries=0)
    # On the canary arm, every surface reaches it: invoke, the native stream, OpenAI (listed,
    # retrieved, streamed), the description.
    assert s.call(name="newbie").json()["output"]["message"] == "hi"
    with s.http.stream("POST", "/production/agents/newbie", json={"input": {}},
                       headers={"accept": "text/event-stream"}) as r:
        assert r.status_code == 200 and "event: done" in r.read().decode()
    assert "newbie" in {m.id for m in client.models.list()}
    assert client.models.retrieve("newbie").id == "newbie"
    chunks = client.chat.completions.create(model="newbie", messages=[{"role": "user", "content": "x"}], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert s.http.get("/production/agents/newbie").json()["commit"] == s.b.get_agent("newbie").staging_commit
    # Routed to stable (weight 0), the same 404 everywhere, saying the agent is only on the canary.
    s.b.set_canary_weight(0, "", "tester")
    only = "only on the canary arm"
    r = s.call(name="newbie")
    assert r.status_code == 404 and only in r.json()["error"]["message"], r.text
    r = s.http.post("/production/agents/newbie", json={"input": {}}, headers={"accept": "text/event-stream"})
    assert r.status_code == 404 and only in r.json()["error"]["message"], r.text
    with pytest.raises(NotFoundError, match=only):
        client.chat.completions.create(model="newbie", messages=[{"role": "user", "content": "x"}], stream=True)
    with pytest.raises(NotFoundError, match=only):
        client.chat.completions.create(model="newbie", messages=[{"role": "user", "content": "x"}])
    assert "newbie" in {m.id for m in client.models.list()}  # (it is in production: on the canary's arm)


def test_running_executions_record_release_and_arm(canary_site: Site) -> None:
    s = canary_site
    s.deploy()
    release = s.start(50, ["agent:bot"])
    s.b.set_canary_weight(100, "", "tester")
    answer: list[httpx.Response] = []
    slow = threading.Thread(target=lambda: answer.append(s.call(sleep=1.6)))
    slow.start()
    try:
        running = _wait(lambda: s.b.list_executions("production", "bot", "running", None, 10, None, release.id,
                                                    "canary"), timeout=8)
        assert len(running) == 1 and (running[0].release_id, running[0].arm) == (release.id, "canary")
        assert s.b.list_executions("production", "bot", "running", None, 10, None, None, "stable") == []
    finally:
        slow.join()
    assert answer[0].status_code == 200
    done = s.b.get_execution(running[0].id)
    assert (done.status, done.release_id, done.arm) == ("succeeded", release.id, "canary")


def test_canary_running_is_cheap_and_never_not_found(site: Site) -> None:
    s = site
    assert s.b.canary_running() is None
    r = s.http.get("/api/releases/canary/running", headers={"authorization": f"Bearer {s.server.token}"})
    assert r.status_code == 200 and r.json() is None
    s.deploy()
    release = s.start(15, ["agent:bot"])
    try:
        running = s.b.canary_running()
        assert (running.id, running.weight) == (release.id, 15) and running.started_at
        s.b.set_canary_weight(40, "", "tester")
        assert s.b.canary_running().weight == 40
    finally:
        s.end()
    assert s.b.canary_running() is None


LIVE_ONLY = """
- live:
    json_schema: {type: object, required: [message], properties: {message: {type: string}}}
    not_contains: Traceback
"""
AUTO_ABORT_ON_SCORE = """
[releases.canary]
auto_abort = true
min_executions = 1000
score_sample = 1.0
max_score_delta = 0.2
min_scored = 8
"""


def test_a_canary_whose_live_score_is_worse_is_aborted_by_itself(tmp_path: Path) -> None:
    """``max_score_delta``: the canary check aborts a canary scoring worse than stable by more
    than the delta once both arms have ``min_scored`` scores (the failure rates are equal: it is
    the score that decides), and records why with the figures. In-process: the server's
    CanaryWatch and live scorer on the services, no HTTP in between."""
    from rf.client import open_local
    from rf.services.canary import CanaryWatch

    ws = init_workspace(tmp_path / "ws")
    with (ws.root / "rf.toml").open("a") as f:
        f.write(AUTO_ABORT_ON_SCORE)
    ws = find_workspace(str(ws.root))
    assert ws.canary.max_score_delta == 0.2 and ws.canary.min_scored == 8
    b = open_local(ws)
    watch = None
    try:
        for shape, message in (("message", "v1"), ("text", "v2: breaks the live schema")):
            write_agent(ws.root, "bot", BOT.replace('"message"', repr(shape)), extra={"evals/live.yaml": LIVE_ONLY})
            b.deploy("bot", snapshot_dir(ws.root / "agents" / "bot"), message, "tester")
            if shape == "message":
                b.publish_release(["agent:bot"], author="tester", message="first")
        started = b.publish_release(["agent:bot"], author="tester", message="canary", canary=50)
        watch = CanaryWatch(b.services, interval_s=0.05, refresh_s=0.2)
        watch.start()
        for n in range(200):
            b.invoke("production", "bot", {}, f"s{n}", "endpoint")
            if n % 10 == 9 and b.canary_status(started.id).status != "running":
                break
        status = _wait(lambda: (c := b.canary_status(started.id)).status != "running" and c)
        assert status and status.status == "aborted", b.canary_status(started.id)
        stable, canary = status.arms
        assert stable.failures == canary.failures == 0
        assert min(stable.scored, canary.scored) >= 8
        abort = b.get_release(status.end_release_id)
        assert abort.kind == "canary-abort" and abort.author == "rf (auto-abort)"
        assert "live score" in abort.message and "max_score_delta 0.2" in abort.message, abort.message
        assert abort.figures is not None and abort.figures["score_delta"] == -0.5
    finally:
        if watch is not None:
            watch.stop()
        b.close()
    # max_score_delta without live scores is refused with the fix.
    (ws.root / "rf.toml").write_text((ws.root / "rf.toml").read_text().replace("score_sample = 1.0", "score_sample = 0"))
    from rf.errors import WorkspaceError

    with pytest.raises(WorkspaceError, match="max_score_delta needs live scores") as err:
        find_workspace(str(ws.root))
    assert "score_sample = 0.1" in (err.value.hint or "")
