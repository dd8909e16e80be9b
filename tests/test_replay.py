"""Recording connector traffic and replaying it (issue 18, items 2-3): ``rf eval --record`` then
replay-only evals (0 calls reach the connector); ``rf replay`` of production executions on
staging, where a staging prompt change alters outputs and the summary names the executions that
changed; an unmatched call fails unless ``--live-connectors``; secrets in connector requests
and responses never reach the store or a recordings file. One ``rf serve`` for the module."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import run_rf, start_server, write_agent
from rf.client import Backend, HttpBackend, open_local
from rf.config import init_workspace, snapshot_dir
from rf.errors import InvalidAgent, NotFound, UsageError

SECRET = "sk-replay-SECRET-7f3a9c"

AGENT_TOML = ('description = "replay target"\nentrypoint = "agent:handle"\ntimeout_s = 20\n'
              'prompts = ["greeting"]\nconnectors = ["crm"]\n')
AGENT_PY = '''
def handle(input, ctx):
    greeting = ctx.prompts.render("greeting")
    kind = input.get("kind")
    if kind == "fail":
        raise ValueError("boom")
    if kind == "crm":
        customer = ctx.connectors.call("crm", "get-customer", id=input["id"])
        return {"message": greeting + " " + customer["name"], "seen": customer["auth"]}
    if kind == "turns":
        return {"message": greeting, "history": len(ctx.session.history())}
    return {"message": greeting + ", " + input.get("name", "world")}
'''
SUITE = '''
- id: customer
  input: {kind: crm, id: "3"}
  expect: {contains: Ada3}
- id: plain
  input: {name: Ada}
  expect: {contains: Ada}
'''


class CountingAPI:
    """A connector's API on 127.0.0.1 that counts requests; ``/customers/ID`` answers a customer
    and echoes the Authorization header it got (an API that repeats the caller's key)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                api.calls.append((self.command, self.path))
                ident = self.path.rstrip("/").rsplit("/", 1)[-1]
                body = json.dumps({"id": ident, "name": f"Ada{ident}",
                                   "auth": self.headers.get("Authorization", "")}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Env:
    def __init__(self, root: Path, b: Backend, api: CountingAPI, server: Any) -> None:
        self.root, self.b, self.api, self.server = root, b, api, server


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    api = CountingAPI()
    ws = init_workspace(tmp_path_factory.mktemp("replay") / "ws")
    write_agent(ws.root, "bot", AGENT_PY, AGENT_TOML, extra={"evals/crm.yaml": SUITE})
    local = open_local(ws)
    try:
        local.set_credential("crm-key", SECRET)
        local.create_connector("crm", api.url, auth="bearer", credential="crm-key")
        local.add_resource("crm", "get-customer", "GET", "/customers/{id}")
        local.publish_connector("crm", "ada")
        local.create_prompt("greeting", "hello")
        local.publish_prompt("greeting", "ada")
        local.deploy("bot", snapshot_dir(ws.root / "agents" / "bot"), "v1", "ada")
        local.promote("bot", "ada")
    finally:
        local.close()
    server = start_server(ws.root)
    try:
        yield Env(ws.root, cast(Backend, HttpBackend(server.url, server.token, ws)), api, server)
    finally:
        server.stop()
        api.close()


def _traffic(b: Backend) -> dict[str, str]:
    """Production executions through the server, by label."""
    made = {}
    for label, input, session in [("ada", {"name": "Ada"}, None), ("bob", {"name": "Bob"}, None),
                                  ("crm1", {"kind": "crm", "id": "1"}, None), ("fail", {"kind": "fail"}, None),
                                  ("turn1", {"kind": "turns", "message": "hi"}, "s-1"),
                                  ("turn2", {"kind": "turns", "message": "again"}, "s-1")]:
        ex = b.invoke("production", "bot", input, session)
        made[label] = ex.id
    return made


def test_replay_of_production_on_staging_names_the_changed_executions(env: Env) -> None:
    b, api = env.b, env.api
    made = _traffic(b)
    sent = len(api.calls)
    assert sent >= 1
    b.set_prompt("greeting", "howdy")  # staging's draft: production still says hello
    r = run_rf("replay", "bot", "--last", "6", "--json", cwd=env.root)
    assert r.returncode == 0, r.stderr + r.stdout  # nothing newly failing
    result = json.loads(r.stdout)
    assert (result["from_env"], result["against"], result["total"]) == ("production", "staging", 6)
    by_id = {e["execution_id"]: e for e in result["executions"]}
    assert set(by_id) == set(made.values())
    outcome = {label: by_id[i]["outcome"] for label, i in made.items()}
    assert outcome == {"ada": "changed", "bob": "changed", "crm1": "changed", "fail": "same",
                       "turn1": "changed", "turn2": "changed"}
    assert (result["same"], result["changed"], result["newly_failing"], result["fixed"]) == (1, 5, 0, 0)
    ada = by_id[made["ada"]]
    assert ada["changes"] == [{"path": "message", "kind": "changed", "before": "hello, Ada", "after": "howdy, Ada"}]
    assert (ada["before_status"], ada["after_status"]) == ("succeeded", "succeeded")
    assert ada["delta_ms"] == pytest.approx(ada["after_ms"] - ada["before_ms"], abs=0.01)
    # the connector call was answered from production's recording: nothing reached the API again
    crm = by_id[made["crm1"]]
    assert (crm["replayed_calls"], crm["unmatched"], len(api.calls)) == (1, [], sent)
    assert crm["after_output"]["message"] == "howdy Ada1" and crm["after_output"]["seen"] == "Bearer [REDACTED]"
    # the second turn saw the first turn's messages (its session up to that turn), not more
    assert by_id[made["turn2"]]["after_output"]["history"] == 2
    assert by_id[made["turn1"]]["after_output"]["history"] == 0
    # the replayed runs are staging executions with source replay, production got none
    replays = b.list_executions(env="staging", source="replay", limit=100)
    assert {e.id for e in replays} == {e["replay_execution_id"] for e in result["executions"]}
    assert all(e.env == "staging" for e in replays)
    assert not [e for e in b.list_executions(env="production", limit=100) if e.source == "replay"]



def test_an_unmatched_connector_call_fails_unless_live_connectors(env: Env) -> None:
    b, api = env.b, env.api
    ex = b.invoke("production", "bot", {"kind": "crm", "id": "2"})
    assert ex.status == "succeeded", ex.error
    sent = len(api.calls)
    # staging now sends the request with another method: production's recording does not hold it
    b.edit_resource("crm", "get-customer", method="POST")
    try:
        result = b.replay("bot", execution_ids=[ex.id])
        replayed = result.executions[0]
        assert (replayed.outcome, result.newly_failing, result.unmatched) == ("newly_failing", 1, 1)
        assert replayed.unmatched == ['crm.get-customer POST {"id": "2"}']
        assert "no recorded answer" in (replayed.after_error or "") and len(api.calls) == sent
        # the terminal view: the table, the side-by-side diff, the unmatched call, the summary; exit code 1
        r = run_rf("replay", "bot", "-x", ex.id, cwd=env.root)
        assert r.returncode == 1, r.stderr
        assert "production (recorded)" in r.stdout and "staging (replayed)" in r.stdout
        assert "hello Ada2" in r.stdout and "no recorded answer" in r.stdout  # before | after
        assert 'unmatched connector call crm.get-customer POST {"id": "2"}' in r.stdout
        assert "1 replayed: 0 same · 0 changed · 1 newly failing · 0 fixed" in r.stdout
        assert len(api.calls) == sent
        live = b.replay("bot", execution_ids=[ex.id], live_connectors=True)
        assert live.executions[0].after_status == "succeeded" and live.executions[0].live_calls == 1
        assert api.calls[sent:] == [("POST", "/customers/2")]
    finally:
        b.edit_resource("crm", "get-customer", method="GET")
    with pytest.raises(UsageError, match="staging's state only"):
        b.replay("bot", against="production")
    with pytest.raises(UsageError, match="not both"):
        b.replay("bot", last=2, execution_ids=[ex.id])
    with pytest.raises(NotFound, match="no recorded staging executions"):
        b.replay("bot", from_env="staging")  # staging ran replays and evals only: no traffic


def test_record_then_replay_only_evals_reach_the_api_zero_times(env: Env) -> None:
    api, root = env.api, env.root
    before = len(api.calls)
    # nothing recorded yet: the connector call fails its case (and nothing goes out)
    first = env.b.run_eval("bot", "staging", files=snapshot_dir(root / "agents" / "bot"))
    cases = {c.id: c for c in first.cases}
    assert not cases["customer"].passed and cases["plain"].passed
    assert "no recorded answer for crm.get-customer GET" in (cases["customer"].attempts[0].error or "")
    assert len(api.calls) == before
    # --record: once against staging's instance, into a reviewable file next to the suite
    r = run_rf("eval", "bot", "--local", "--record", cwd=root)
    assert r.returncode == 0, r.stderr + r.stdout
    assert "recorded agents/bot/evals/crm.recordings.json" in r.stderr
    assert len(api.calls) == before + 1
    path = root / "agents" / "bot" / "evals" / "crm.recordings.json"
    text = path.read_text()
    assert SECRET not in text and "Bearer [REDACTED]" in text
    doc = json.loads(text)
    assert doc["cases"]["customer"] == [{"connector": "crm", "resource": "get-customer", "method": "GET",
                                         "params": {"id": "3"}, "response": {
                                             "id": "3", "name": "Ada3", "auth": "Bearer [REDACTED]"}}]
    assert doc["cases"]["plain"] == []
    # replay-only (the default): the case passes from the recording, 0 calls reach the API
    for _ in range(2):
        result = env.b.run_eval("bot", "staging", files=snapshot_dir(root / "agents" / "bot"))
        assert result.failed == 0 and result.connectors == "replay"
    assert len(api.calls) == before + 1
    # the recording is part of the commit: deployed, the staging commit's suite replays it too
    env.b.deploy("bot", snapshot_dir(root / "agents" / "bot"), "with recordings", "ada")
    assert env.b.run_eval("bot", "staging").failed == 0 and len(api.calls) == before + 1


def test_secrets_never_reach_the_stored_spans(env: Env) -> None:
    """The connector echoed the bearer token in every answer; the spans (production's and the
    replays') keep the answers with the token redacted, and the store file never holds it."""
    spans = json.dumps([s.__dict__ for env_name in ("production", "staging")
                        for s in env.b.export_spans(env_name)], default=str)
    assert "connectors.call" in spans and "Bearer [REDACTED]" in spans
    assert SECRET not in spans
    env.server.stop()  # (the last test of the module) the store's files, as written to disk
    for f in (env.root / ".rf").rglob("*"):
        if f.is_file():
            assert SECRET.encode() not in f.read_bytes(), f


def test_recorded_spans_keep_bodies_and_minimal_cannot_replay(tmp_path: Path) -> None:
    """Standard mode keeps a connector body past trace_max_chars (up to 64 KiB); a longer one is
    cut and marked; a minimal trace keeps none: the call is listed as not recorded."""
    from rf.evals.tape import BODY_MAX, Tape, recorded_from_spans
    from rf.models import Span
    from rf.services.host import HostCall
    from rf.services.traces import ExecutionTrace

    class _Store:
        pass

    call = HostCall(env="production", agent="a", execution_id="ex_x")
    trace = ExecutionTrace(_Store(), call, "standard", max_chars=100)  # type: ignore[arg-type]
    params = {"slug": "crm", "resource": "r", "params": {"q": "x"}}

    def span(result: Any) -> Span:
        def serve() -> Any:  # what the connectors.call host method notes on its span
            call.annotate(connector="crm", resource="r", method="GET")
            return result

        trace.host_call("connectors.call", params, serve)
        row = trace.rows.pop()
        return Span(span_id=row[0], trace_id="t", parent_id=row[1], execution_id="ex_x", env="production",
                    agent="a", kind=row[2], name=row[3], start_ns=row[4], end_ns=row[5], status=row[6],
                    error=row[7], attributes=json.loads(json.dumps(row[8])))

    long_body = {"text": "y" * 5000}
    kept = span(long_body)
    assert kept.attributes["output"] == long_body and "body_truncated" not in kept.attributes
    cut = span({"text": "z" * (BODY_MAX + 10)})
    assert cut.attributes["body_truncated"] is True
    calls, missing = recorded_from_spans([kept, cut])
    assert [c.response for c in calls] == [long_body] and missing == ["crm.r GET (body over 64 KiB: cut in the trace)"]
    tape = Tape(calls)
    assert tape.answer("crm", "r", "GET", {"q": "x"}) is not None and tape.answer("crm", "r", "GET", {}) is None
    minimal = Span(span_id="1", trace_id="t", parent_id="0", execution_id="ex_x", env="production", agent="a",
                   kind="connector", name="connectors.call", start_ns=1, end_ns=2, status="ok", attributes={})
    assert recorded_from_spans([minimal]) == ([], ["connectors.call (trace mode minimal: no request or response kept)"])


def test_replay_in_process_and_a_bad_recordings_file(tmp_path: Path) -> None:
    ws = init_workspace(tmp_path / "ws")
    write_agent(ws.root, "echo", "def handle(input, ctx):\n    return {'v': input['v'] * FACTOR}\nFACTOR = 1\n",
                'entrypoint = "agent:handle"\n')
    b = open_local(ws)
    try:
        b.deploy("echo", snapshot_dir(ws.root / "agents" / "echo"), "v1", "ada")
        b.promote("echo", "ada")
        ids = [b.invoke("production", "echo", {"v": v}).id for v in (0, 1)]
        write_agent(ws.root, "echo", "def handle(input, ctx):\n    return {'v': 1 / input['v']}\n",
                    'entrypoint = "agent:handle"\n')
        b.deploy("echo", snapshot_dir(ws.root / "agents" / "echo"), "v2", "ada")
        result = b.replay("echo", llm="mock")
        assert [e.execution_id for e in result.executions] == ids  # oldest first
        assert [e.outcome for e in result.executions] == ["newly_failing", "same"]
        assert "ZeroDivisionError" in (result.executions[0].after_error or "")
        with pytest.raises(UsageError, match="--llm must be one of"):
            b.replay("echo", llm="gpt")
        bad = {"evals/a.yaml": b"- id: x\n  input: 1\n", "evals/a.recordings.json": b'{"cases": {"x": [{}]}}'}
        write_agent(ws.root, "echo", "def handle(input, ctx):\n    return input\n", 'entrypoint = "agent:handle"\n',
                    extra={k: v.decode() for k, v in bad.items()})
        with pytest.raises(InvalidAgent, match=re.escape("agents/echo/evals/a.recordings.json: case 'x', call 1")):
            b.deploy("echo", snapshot_dir(ws.root / "agents" / "echo"), "v3", "ada")
    finally:
        b.close()
