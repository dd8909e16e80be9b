"""Webhooks are signed, fresh and used once; refusals say nothing about which trigger ids
exist; a deleted trigger's secret leaves the keyring; the printed examples work. A connector
failure tells an endpoint's caller neither the connector's URL nor the API's answer.

Everything goes through a real ``rf serve`` on 127.0.0.1 and real HTTP; secrets live in rf's
file keyring under a tmp ``XDG_DATA_HOME``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent
from rf.client import open_local
from rf.config import snapshot_dir
from rf.errors import RfError
from rf.services.triggers import ReplayGuard, TooManyWebhooks, sign_webhook

REFUSED = {"error": {"code": "unauthorized", "message": "webhook signature missing, wrong or expired",
                     "hint": "sign t.body with the trigger's secret; see rf triggers show ID"}}


@pytest.fixture(autouse=True)
def _file_keyring(monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets in rf's file keyring (under conftest's tmp XDG_DATA_HOME), servers included."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")


def stored_secrets(ws: Any) -> dict[str, str]:
    """The webhook secrets of this workspace in the keyring file."""
    from rf.secrets import secrets_file

    path = secrets_file()
    data = json.loads(path.read_text()) if path.exists() else {}
    return {k: v for k, v in data.get(f"rf/{ws.id}", {}).items() if k.startswith("webhook-")}


def deploy_hello(ws: Any) -> None:
    assert run_rf_here("agents", "deploy", "hello", cwd=ws.root).returncode == 0


def create_webhook(ws: Any, *extra: str) -> dict[str, Any]:
    r = run_rf_here("triggers", "create", "--agent", "hello", "--webhook", "--json", *extra, cwd=ws.root)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def trigger_runs(ws: Any, trigger_id: str, env: str = "staging") -> int:
    r = run_rf_here("executions", "list", "--env", env, "--json", cwd=ws.root)
    return sum(e["source"] == f"trigger:{trigger_id}" for e in json.loads(r.stdout))


def test_a_signed_request_runs_once_and_its_replay_is_refused(ws: Any, server: ServerProc) -> None:
    deploy_hello(ws)
    t = create_webhook(ws)
    url, body = server.url + t["url"], json.dumps({"name": "signed"}).encode()
    headers = {"X-RF-Signature": sign_webhook(t["secret"], body), "Content-Type": "application/json"}
    first = httpx.post(url, content=body, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["output"]["message"] == "hello, signed"
    again = httpx.post(url, content=body, headers=headers)  # a captured request, sent again
    assert again.status_code == 401 and again.json() == REFUSED
    assert trigger_runs(ws, t["id"]) == 1
    # the same signature listed twice, or next to a wrong one, is still the one already used
    value = headers["X-RF-Signature"]
    twice = value + "," + value.split(",")[1]
    assert httpx.post(url, content=body, headers={"X-RF-Signature": twice}).status_code == 401
    # a new signature (new timestamp) of the same body is a new request
    later = sign_webhook(t["secret"], body, int(value[2:].split(",")[0]) - 30)
    assert httpx.post(url, content=body, headers={"X-RF-Signature": later}).status_code == 200
    assert trigger_runs(ws, t["id"]) == 2


def test_a_replay_is_refused_after_a_server_restart(ws: Any) -> None:
    deploy_hello(ws)
    t = create_webhook(ws)
    body = b'{"name": "restart"}'
    headers = {"X-RF-Signature": sign_webhook(t["secret"], body)}
    server = start_server(ws.root)
    try:
        assert httpx.post(server.url + t["url"], content=body, headers=headers).status_code == 200
    finally:
        server.stop()
    server = start_server(ws.root)
    try:
        r = httpx.post(server.url + t["url"], content=body, headers=headers)
        assert r.status_code == 401 and r.json() == REFUSED
    finally:
        server.stop()
    assert trigger_runs(ws, t["id"]) == 1


def test_timestamps_more_than_five_minutes_off_are_refused(ws: Any, server: ServerProc) -> None:
    deploy_hello(ws)
    t = create_webhook(ws)
    url, body, now = server.url + t["url"], b"{}", int(time.time())
    for offset in (-360, 360):  # 6 minutes old, 6 minutes ahead
        r = httpx.post(url, content=body, headers={"X-RF-Signature": sign_webhook(t["secret"], body, now + offset)})
        assert r.status_code == 401 and r.json() == REFUSED
    assert trigger_runs(ws, t["id"]) == 0
    for offset in (-240, 240):  # 4 minutes either way: a clock a little off is fine
        r = httpx.post(url, content=body, headers={"X-RF-Signature": sign_webhook(t["secret"], body, now + offset)})
        assert r.status_code == 200, r.text
    assert trigger_runs(ws, t["id"]) == 2


def test_every_refusal_is_the_same_answer(ws: Any, server: ServerProc) -> None:
    """Unknown id, the other environment's id, a disabled or staged trigger, no signature, a
    wrong one, a malformed one: byte-identical answers, so ids cannot be probed."""
    deploy_hello(ws)
    assert run_rf("agents", "promote", "hello", "--yes", cwd=ws.root).returncode == 0
    live = create_webhook(ws)
    disabled = create_webhook(ws)
    assert run_rf_here("triggers", "disable", disabled["id"], cwd=ws.root).returncode == 0
    staged = json.loads(run_rf_here("triggers", "duplicate", live["id"], "--env", "production", "--json",
                               cwd=ws.root).stdout)
    body = b'{"name": "probe"}'

    def post(path: str, signature: str | None) -> httpx.Response:
        headers = {"X-RF-Signature": signature} if signature is not None else {}
        return httpx.post(server.url + path, content=body, headers=headers)

    answers = {
        "unknown id": post("/staging/hooks/tr_doesnotexist0000000", sign_webhook(live["secret"], body)),
        "unknown id, no signature": post("/staging/hooks/tr_doesnotexist0000000", None),
        "wrong secret": post(live["url"], sign_webhook("not-the-secret", body)),
        "no signature": post(live["url"], None),
        "old body-only scheme": post(live["url"], "sha256=" + "0" * 64),
        "malformed": post(live["url"], "t=abc,v1=xyz"),
        "other environment": post(f"/production/hooks/{live['id']}", sign_webhook(live["secret"], body)),
        "disabled": post(disabled["url"], sign_webhook(disabled["secret"], body)),
        "staged, not live": post(staged["url"], sign_webhook(staged["secret"], body)),
    }
    wrong = answers["wrong secret"]
    assert wrong.status_code == 401 and wrong.json() == REFUSED
    for what, r in answers.items():
        assert (r.status_code, r.content) == (wrong.status_code, wrong.content), what
        assert r.headers.get("content-type") == wrong.headers.get("content-type"), what
    assert trigger_runs(ws, live["id"]) == trigger_runs(ws, disabled["id"]) == 0
    # the owner can still tell: the server log says why each was refused
    server.stop()
    log = server.proc.stdout.read() if server.proc.stdout else ""
    assert "no such webhook trigger" in log and "the trigger is disabled" in log and "wrong signature" in log


def test_a_deleted_triggers_secret_leaves_the_keyring(ws: Any) -> None:
    deploy_hello(ws)
    kept, gone = create_webhook(ws), create_webhook(ws)
    assert stored_secrets(ws) == {f"webhook-{kept['id']}": kept["secret"], f"webhook-{gone['id']}": gone["secret"]}
    assert run_rf("triggers", "delete", gone["id"], "--yes", cwd=ws.root).returncode == 0
    assert stored_secrets(ws) == {f"webhook-{kept['id']}": kept["secret"]}
    # a staged production copy that is discarded takes its own secret with it
    copy = json.loads(run_rf_here("triggers", "duplicate", kept["id"], "--env", "production", "--json",
                             cwd=ws.root).stdout)
    assert f"webhook-{copy['id']}" in stored_secrets(ws)
    assert run_rf_here("triggers", "delete", copy["id"], "--yes", cwd=ws.root).returncode == 0
    assert stored_secrets(ws) == {f"webhook-{kept['id']}": kept["secret"]}

    # a trigger whose row could not be written leaves no secret behind
    b = open_local(ws)
    try:
        def broken(*args: Any, **kwargs: Any) -> None:
            raise RfError("disk full")

        b.services.store.insert_trigger = broken  # type: ignore[method-assign]
        with pytest.raises(RfError, match="disk full"):
            b.create_trigger("hello", "webhook")
        with pytest.raises(RfError, match="disk full"):
            b.duplicate_trigger(kept["id"], "production")
    finally:
        b.close()
    assert stored_secrets(ws) == {f"webhook-{kept['id']}": kept["secret"]}


def _block(text: str, title: str) -> str:
    """The indented lines under ``title`` in ``rf triggers show`` output, dedented."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == title) + 1
    block = []
    for line in lines[start:]:
        if line.strip() and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip() + "\n"


def test_the_printed_examples_trigger_the_agent(ws: Any, server: ServerProc) -> None:
    deploy_hello(ws)
    t = create_webhook(ws)
    shown = run_rf("triggers", "show", t["id"], cwd=ws.root)
    assert shown.returncode == 0, shown.stderr
    assert "X-RF-Signature: t=UNIX_SECONDS,v1=" in shown.stdout and server.url + t["url"] in shown.stdout
    python = _block(shown.stdout, "Python:")
    assert python == run_rf_here("triggers", "show", t["id"], "--example", "python", cwd=ws.root).stdout
    env = {**os.environ, "WEBHOOK_SECRET": t["secret"]}
    r = subprocess.run([sys.executable, "-c", python], env=env, capture_output=True, text=True, timeout=60)
    python_done = time.time()
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"]["message"] == "hello, world"
    assert trigger_runs(ws, t["id"]) == 1

    curl = _block(shown.stdout, "curl (the shell computes the signature with openssl):")
    assert "openssl dgst -sha256 -hmac" in curl and "curl " in curl
    if not (shutil.which("bash") and shutil.which("openssl") and shutil.which("curl")):
        pytest.skip("bash, openssl or curl missing: the curl example was not run")
    # the same body signed in the same second is the same signature (a replay): the curl example
    # signs in a later second than the Python one did
    time.sleep(max(0.0, int(python_done) + 1.05 - time.time()))
    r = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"]["message"] == "hello, world", r.stdout
    assert trigger_runs(ws, t["id"]) == 2


def test_the_replay_guard_is_bounded_and_persisted(tmp_path: Path) -> None:
    path = tmp_path / "seen"
    guard = ReplayGuard(path, max_entries=2)
    now = 1_000_000.0
    assert guard.check_and_add("tr_a:1", now + 300, now)
    assert not guard.check_and_add("tr_a:1", now + 300, now + 10)  # a replay
    assert guard.check_and_add("tr_a:2", now + 100, now)
    with pytest.raises(TooManyWebhooks):  # full: refuse rather than forget an unexpired one
        guard.check_and_add("tr_a:3", now + 300, now)
    assert guard.check_and_add("tr_a:3", now + 300, now + 101)  # tr_a:2 expired, room again
    assert len(guard) == 2
    again = ReplayGuard(path, max_entries=2)  # a restarted server reads what is still live
    assert not again.check_and_add("tr_a:1", now + 300, now + 102)
    assert not again.check_and_add("tr_a:3", now + 300, now + 102)
    assert again.check_and_add("tr_a:1", now + 900, now + 301)  # expired with its window


# ---------------------------------------------------------------- connector errors


MARKER_BODY = "UPSTREAM-BODY-MARKER-5c1e"
MARKER_PATH = "internal-marker-path-93af"


@pytest.fixture
def failing_api() -> Iterator[str]:
    """An API that answers 500 with a body an outsider must never see."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            data = json.dumps({"error": "db down", "detail": MARKER_BODY, "path": self.path}).encode()
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/{MARKER_PATH}/v2"
    finally:
        httpd.shutdown()
        httpd.server_close()


CALLER_TOML = 'description = "calls crm"\nentrypoint = "agent:handle"\ntimeout_s = 20\nconnectors = ["crm"]\n'
CALLER_PY = "def handle(input, ctx):\n    return ctx.connectors.call('crm', 'get-customer', id='7')\n"


def test_a_connector_failure_tells_the_caller_no_url_and_no_body(ws: Any, failing_api: str) -> None:
    write_agent(ws.root, "caller", CALLER_PY, CALLER_TOML)
    b = open_local(ws)
    try:
        b.create_connector("crm", failing_api, retries=0)
        b.add_resource("crm", "get-customer", "GET", "/customers/{id}")
        b.deploy("caller", snapshot_dir(ws.root / "agents" / "caller"), "v1", "ada")
    finally:
        b.close()
    server = start_server(ws.root)
    try:
        r = httpx.post(server.url + "/staging/agents/caller", json={"input": {}}, timeout=60)
        assert r.status_code == 500, r.text
        answer = r.json()
        assert "connector crm.get-customer failed: HTTP 500" in answer["error"]
        assert MARKER_PATH not in r.text and MARKER_BODY not in r.text and "127.0.0.1" not in r.text
        ex_id = answer["execution_id"]
        # the developer still sees everything: the trace span has the URL and the API's answer
        trace = json.loads(run_rf("traces", "show", ex_id, "--json", cwd=ws.root).stdout)
        [span] = [s for s in trace["spans"] if s["name"] == "connectors.call"]
        assert span["status"] == "error" and span["attributes"]["status"] == 500
        assert span["attributes"]["url"] == failing_api + "/customers/7"
        assert MARKER_BODY in span["attributes"]["response_body"]
        assert span["attributes"]["error_detail"] == f"GET {failing_api}/customers/7 answered HTTP 500 Internal Server Error"
        # and rf executions show points there
        shown = run_rf_here("executions", "show", ex_id, cwd=ws.root)
        assert f"rf traces show {ex_id} --json" in shown.stdout + shown.stderr
    finally:
        server.stop()


def test_a_server_on_another_host_takes_the_secret_from_its_environment(
        ws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica on another host has no keyring entry for a webhook's secret: it reads
    ``RF_SECRET_WEBHOOK_<TRIGGER_ID>`` (README, "Running on PostgreSQL"); without either, the
    request is refused like any other."""
    from rf.errors import Unauthorized
    from rf.secrets import SecretStore, env_var

    deploy_hello(ws)
    b = open_local(ws)
    try:
        t = b.create_trigger("hello", "webhook")
        secret = t.secret
        assert secret
        SecretStore(ws.id).delete(f"webhook-{t.id}")  # "another host": nothing in its keyring
        body = b'{"n": 1}'
        with pytest.raises(Unauthorized):
            b.services.webhook("staging", t.id, body, {"X-RF-Signature": sign_webhook(secret, body)})
        name = env_var(f"webhook-{t.id}")
        assert name == f"RF_SECRET_WEBHOOK_{t.id.upper()}"
        monkeypatch.setenv(name, secret)
        ex = b.services.webhook("staging", t.id, body, {"X-RF-Signature": sign_webhook(secret, body)})
        assert ex.status == "succeeded" and ex.source == f"trigger:{t.id}"
    finally:
        b.close()
