"""Secrets do not leak sideways: not into what rf stores, not into its logs, not to other users.

The end-to-end tests run a real ``rf serve`` on 127.0.0.1 (with
``RF_LOG_LEVEL=info`` and ``debug``) and a fake upstream API that echoes the
full request URL and the API key it got in its JSON answer. A credential with
a unique marker value is that API key, sent as a query-string parameter. A
staging agent calls the API, returns its answer, appends it to its session,
writes it to memory, logs and prints it, and raises an error holding it in
another run; a third run gets the marker in its *input* (a caller pasting it).
Then the server stops cleanly and every byte under ``.rf/`` (the DuckDB file,
its WAL if any, caches) and everything the server printed is searched for
the marker: zero hits. Nothing under ``.rf/`` may have a group or other
permission bit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from conftest import RF, run_rf, run_rf_here, write_agent

AGENT_TOML = 'description = "echoes an upstream"\nentrypoint = "agent:handle"\ntimeout_s = 20\nconnectors = ["echo"]\n'
AGENT_PY = '''
import json


def handle(input, ctx):
    op = input.get("op", "call")
    if op == "remember":  # the marker came in the input: no connector call, no registered secret
        ctx.memory.set("pasted", input["message"])
        ctx.session.append("tool", {"pasted": input["message"]})
        print("pasted", input["message"])
        return {"message": "noted " + input["message"]}
    answer = ctx.connectors.call("echo", "lookup", q="hello")
    text = json.dumps(answer)
    print("upstream said", text)
    ctx.logger.warning("upstream said %s", text)
    if op == "fail":
        raise RuntimeError("upstream answered " + text)
    ctx.session.append("tool", answer)
    ctx.memory.set("last-answer", answer)
    ctx.memory.set("key:" + answer["key"], {"url": answer["url"]})  # a key holding it too
    with ctx.trace.span("echoed", answer=text):
        pass
    return {"message": "upstream said " + text, "answer": answer}
'''


# ---------------------------------------------------------------- a fake upstream that echoes everything


class EchoAPI:
    """A real HTTP server on 127.0.0.1 answering ``{"url": <full URL>, "key": <api_key>, "query": ...}``."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = f"http://{self.headers.get('Host')}{self.path}"
                api.requests.append(url)
                query = parse_qs(urlsplit(self.path).query)
                data = json.dumps({"url": url, "key": query.get("api_key", [""])[0],
                                   "query": urlsplit(self.path).query}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def echo_api() -> Iterator[EchoAPI]:
    api = EchoAPI()
    yield api
    api.stop()


@pytest.fixture(autouse=True)
def _secrets_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credential values go to rf's file keyring under tmp (subprocesses inherit this)."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")


# ---------------------------------------------------------------- a server whose output we keep


class Server:
    def __init__(self, root: Path, log_level: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
        env.update({"RF_LOG_LEVEL": log_level, "NO_COLOR": "1", "COLUMNS": "160"})
        self.out_path = root.parent / f"serve-{log_level}.out"
        self.err_path = root.parent / f"serve-{log_level}.err"
        self._out = self.out_path.open("w")
        self._err = self.err_path.open("w")
        self.proc = subprocess.Popen([*RF, "serve", "--port", "0"], cwd=root, text=True, env=env,
                                     stdout=self._out, stderr=self._err)
        info_file = root / ".rf" / "server.json"
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("rf serve exited: " + self.err_path.read_text())
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError("rf serve did not start in time")
            try:
                info = json.loads(info_file.read_text())
                if httpx.get(info["url"] + "/api/health", timeout=1).status_code == 200:
                    break
            except (OSError, ValueError, httpx.HTTPError):
                pass
            time.sleep(0.05)
        self.url: str = info["url"]
        self.token: str = info["token"]

    def stop(self) -> int:
        """SIGTERM, the clean way: the server flushes, checkpoints and removes server.json."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        self._err.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")


def _forms(marker: str) -> list[bytes]:
    """The marker as bytes, and how it could look in UTF-16 (a stored string in another encoding)."""
    return [marker.encode(), marker.encode("utf-16-le"), marker[3:].encode()]


def files_holding(root: Path, marker: str) -> list[str]:
    """Every file under ``root`` (binary included) that holds the marker."""
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)} holds {form!r}" for form in _forms(marker) if form in data]
    return hits


def loose_permissions(root: Path) -> list[str]:
    """Everything at or under ``root`` with a group or other permission bit."""
    loose = []
    for path in [root, *root.rglob("*")]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            loose.append(f"{path.relative_to(root.parent)} {stat.filemode(mode)}")
    return loose


def _post(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    r = httpx.post(server.url + "/staging/agents/leaky", json=body, timeout=30)
    result: dict[str, Any] = r.json()
    return result


# ---------------------------------------------------------------- the end-to-end tests


@pytest.mark.parametrize("log_level", ["info", "debug"])
def test_a_credential_echoed_by_an_upstream_is_stored_and_logged_nowhere(
        ws: Any, echo_api: EchoAPI, log_level: str) -> None:
    marker = "mk-" + uuid.uuid4().hex
    write_agent(ws.root, "leaky", AGENT_PY, AGENT_TOML)
    server = Server(ws.root, log_level)
    leaks: list[str] = []
    try:
        r = run_rf("credentials", "set", "echo-key", "--from-stdin", "--yes", cwd=ws.root, input=marker + "\n")
        assert r.returncode == 0, r.stderr
        r = run_rf_here("connectors", "create", "echo", "--base-url", echo_api.url, "--auth", "api-key",
                   "--credential", "echo-key", "--api-key-query", "api_key", cwd=ws.root)
        assert r.returncode == 0, r.stderr
        r = run_rf_here("connectors", "resources", "add", "echo", "lookup", "-X", "GET", "--path", "/v1/lookup",
                   cwd=ws.root)
        assert r.returncode == 0, r.stderr
        r = run_rf_here("agents", "deploy", "leaky", cwd=ws.root)
        assert r.returncode == 0, r.stderr

        # Every leak is collected, so a failure lists them all (caller, reads, server log, files, modes).
        def check(where: str, text: str) -> None:
            if marker in text:
                leaks.append(f"{where}: ...{text[max(text.find(marker) - 80, 0):text.find(marker) + 40]}...")

        # 1. the endpoint: the upstream echoes the key; the caller gets it redacted
        first = _post(server, {"input": {"op": "call"}, "session_id": "s-1"})
        assert first["status"] == "succeeded", first
        assert any(marker in url for url in echo_api.requests), "the key was really sent as a query parameter"
        check("endpoint answer", json.dumps(first))
        # 2. an error holding it
        failed = _post(server, {"input": {"op": "fail"}, "session_id": "s-1"})
        assert failed["status"] == "failed"
        check("endpoint error", json.dumps(failed))
        # 3. a caller pastes it: stored input, session and memory are redacted too
        pasted = _post(server, {"input": {"op": "remember", "message": f"my key is {marker}"}, "session_id": "s-2"})
        assert pasted["status"] == "succeeded", pasted
        check("endpoint answer (pasted)", json.dumps(pasted))
        # 4. rf invoke through the server prints it redacted (a real process: anything it would log
        # lands on its stderr; the reads below check stdout, and run in-process, run_rf_here)
        r = run_rf("invoke", "leaky", '{"op": "call"}', "--session", "s-1", cwd=ws.root)
        assert r.returncode == 0, r.stderr
        check("rf invoke", r.stdout + r.stderr)
        # what can be read back
        for args in (["sessions", "show", "s-1", "--json"], ["sessions", "show", "s-2", "--json"],
                     ["memory", "list", "--json"], ["executions", "list", "--json"],
                     ["traces", "export", "-", "--format", "otlp-json"]):
            r = run_rf_here(*args, cwd=ws.root)
            assert r.returncode == 0, (args, r.stderr)
            check(" ".join(args), r.stdout)
        executions = json.loads(run_rf_here("executions", "list", "--json", cwd=ws.root).stdout)
        assert len(executions) == 4
        for ex in executions:
            check(f"rf executions show {ex['id']}", run_rf_here("executions", "show", ex["id"], "--json", cwd=ws.root).stdout)
            check(f"rf traces show {ex['id']}", run_rf_here("traces", "show", ex["id"], "--json", cwd=ws.root).stdout)
    finally:
        rc = server.stop()
    assert rc == 0, server.output()
    assert not (ws.root / ".rf" / "server.json").exists()
    output = server.output()
    leaks += [f"server output: {line}" for line in output.splitlines() if marker in line]
    leaks += files_holding(ws.root / ".rf", marker)
    leaks += [f"loose permissions: {p}" for p in loose_permissions(ws.root / ".rf")]
    assert leaks == [], "\n".join(leaks)
    # and what the caller got says where the value was
    assert first["output"]["answer"]["key"] == "[REDACTED]"
    assert "api_key=[REDACTED]" in first["output"]["answer"]["url"]
    assert "[REDACTED]" in json.dumps(failed) and "[REDACTED]" in json.dumps(pasted)


def test_files_under_rf_are_owner_only_even_in_a_workspace_made_before(ws: Any) -> None:
    """An existing workspace with a 0755 ``.rf/`` and 0644 files is fixed when its store opens, and
    everything a command and a server create there is owner-only."""
    state = ws.root / ".rf"
    state.mkdir(exist_ok=True)
    os.chmod(state, 0o755)
    r = run_rf("agents", "deploy", "hello", cwd=ws.root)  # the store, in-process
    assert r.returncode == 0, r.stderr
    for path in [state, *state.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    (state / "notes.txt").write_text("left by an older rf")
    os.chmod(state / "notes.txt", 0o644)
    r = run_rf("invoke", "hello", '{"name": "Ada"}', cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert loose_permissions(state) == []
    server = Server(ws.root, "warning")
    try:
        # while it runs: the DuckDB file, its WAL and server.json
        assert _post_hello(server)["status"] == "succeeded"
        assert (state / "server.json").exists()
        assert loose_permissions(state) == []
    finally:
        assert server.stop() == 0
    assert loose_permissions(state) == []


def _post_hello(server: Server) -> dict[str, Any]:
    r = httpx.post(server.url + "/staging/agents/hello", json={"input": {"name": "Ada"}}, timeout=30)
    result: dict[str, Any] = r.json()
    return result


def test_the_file_keyring_is_0600_in_a_0700_directory(ws: Any, tmp_path: Path) -> None:
    from rf.secrets import secrets_file

    r = run_rf("credentials", "set", "some-token", "--from-stdin", cwd=ws.root, input="t-" + uuid.uuid4().hex)
    assert r.returncode == 0, r.stderr
    path = secrets_file()
    assert path.is_relative_to(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert loose_permissions(path.parent) == []
    # a directory left group-readable by something else is tightened on the next write
    os.chmod(path.parent, 0o755)
    r = run_rf("credentials", "set", "other-token", "--from-stdin", cwd=ws.root, input="t-" + uuid.uuid4().hex)
    assert r.returncode == 0, r.stderr
    assert loose_permissions(path.parent) == []


# ---------------------------------------------------------------- in-process: the pieces


@pytest.fixture
def known() -> Iterator[Any]:
    """The process's registry of known credential values, emptied before and after."""
    from rf import logsetup

    logsetup.KNOWN.clear()
    yield logsetup.KNOWN
    logsetup.KNOWN.clear()


def test_the_log_filter_redacts_messages_arguments_and_exceptions(known: Any) -> None:
    from rf.logsetup import RedactFilter

    marker = "mk-" + uuid.uuid4().hex
    known.set_values("ws-test", [marker, "short"])
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.addFilter(RedactFilter())
    log = logging.getLogger("rf.test.redact")
    log.addHandler(handler)
    log.propagate = False
    try:
        log.warning("HTTP Request: GET %s", "https://api.example/v1?q=1&api_key=abc123xyz&x=2")
        log.warning("GET https://api.example/v1?token=t0k3n-value#frag and ?password=hunter22 and "
                    "?access_token=at-1&secret=s3 key=kkk12345, Authorization: Bearer abcdefghijklmnop")
        log.warning("got %r from upstream", {"key": marker})
        try:
            raise RuntimeError(f"upstream said {marker}")
        except RuntimeError:
            log.exception("call failed")
        log.warning("a short value stays: short; monkey=banana stays")
    finally:
        log.removeHandler(handler)
    text = "\n".join(records)
    assert marker not in text
    for leaked in ("abc123xyz", "t0k3n-value", "hunter22", "at-1", "s3 ", "kkk12345", "abcdefghijklmnop"):
        assert leaked not in text, leaked
    assert "api_key=[REDACTED]&x=2" in text and "#frag" in text
    assert "RuntimeError: upstream said [REDACTED]" in text and "Traceback" in text
    assert "short value stays: short" in text and "monkey=banana" in text


def test_configure_quiets_http_clients_and_keeps_rf_log_level(known: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from rf import logsetup

    root = logging.getLogger()
    saved = (root.level, list(root.handlers), logging.getLogger("rf").level)
    try:
        monkeypatch.setenv("RF_LOG_LEVEL", "debug")
        logsetup.configure()
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("rf.server").getEffectiveLevel() == logging.DEBUG
        rf_handlers = [h for h in root.handlers if isinstance(h, logsetup.RfHandler)]
        assert len(rf_handlers) == 1 and any(isinstance(f, logsetup.RedactFilter) for f in rf_handlers[0].filters)
        logsetup.configure()  # twice: still one handler
        assert len([h for h in root.handlers if isinstance(h, logsetup.RfHandler)]) == 1
        monkeypatch.setenv("RF_LOG_LEVEL", "nonsense")
        logsetup.configure()
        assert logging.getLogger("rf").getEffectiveLevel() == logging.WARNING
    finally:
        root.setLevel(saved[0])
        root.handlers[:] = saved[1]
        logging.getLogger("rf").setLevel(saved[2])


def test_known_values_redacted_in_records_session_memory_and_spans(ws: Any, known: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process (LocalBackend): a credential value set through the services, and one from
    ``RF_SECRET_<NAME>``, never reach the store; deleting the credential forgets it."""
    from rf.client import open_local
    from rf.config import snapshot_dir

    stored_value = "st-" + uuid.uuid4().hex
    quoted_value = 'q"\\-' + uuid.uuid4().hex  # a quote and a backslash: escaped inside JSON text
    env_value = "env-" + uuid.uuid4().hex
    monkeypatch.setenv("RF_SECRET_FROM_ENV", env_value)
    code = (
        "def handle(input, ctx):\n"
        "    ctx.memory.set('m', input['text'])\n"
        "    ctx.memory.set('q', {'v': [input['quoted']]})\n"
        "    ctx.session.append('tool', input['text'])\n"
        "    with ctx.trace.span('s', text=input['text'], quoted=input['quoted']):\n"
        "        pass\n"
        "    print(input['text'], input['quoted'])\n"
        "    if input.get('fail'):\n"
        "        raise ValueError(input['text'] + input['quoted'])\n"
        "    return {'text': input['text'], 'quoted': input['quoted'], 'n': 123456}\n"
    )
    write_agent(ws.root, "parrot", code)
    b = open_local(ws)
    values = (stored_value, quoted_value, env_value)

    def leaks(text: str) -> list[str]:
        forms = [*values, *(json.dumps(v)[1:-1] for v in values)]
        return [f for f in forms if f in text]

    try:
        b.services.set_credential("stored", stored_value)
        b.services.set_credential("quoted", quoted_value)
        b.deploy("parrot", snapshot_dir(ws.root / "agents" / "parrot"), "v1", "ada")
        text = f"a {stored_value} b {env_value} c"
        ex = b.invoke("staging", "parrot", {"text": text, "quoted": f"<{quoted_value}>"}, session_id="s")
        assert ex.status == "succeeded", ex.error
        assert ex.output == {"text": "a [REDACTED] b [REDACTED] c", "quoted": "<[REDACTED]>", "n": 123456}
        failed = b.invoke("staging", "parrot", {"text": text, "quoted": quoted_value, "fail": True}, session_id="s")
        assert failed.status == "failed"
        assert leaks((failed.error or "") + (failed.traceback or "") + (failed.logs or "")) == []
        assert "[REDACTED]" in (failed.error or "")
        dumped = json.dumps([
            [e.__dict__ for e in b.list_executions("staging")],
            [m.__dict__ for m in b.get_session("s").messages],
            [m.__dict__ for m in b.list_memory("staging")],
            [s.__dict__ for s in b.export_spans("staging")],
        ], default=str)
        assert leaks(dumped) == []
        assert "[REDACTED]" in dumped

        # deleting a credential forgets its value
        b.services.delete_credential("stored")
        ex = b.invoke("staging", "parrot", {"text": text, "quoted": quoted_value}, session_id="s")
        assert ex.output == {"text": f"a {stored_value} b [REDACTED] c", "quoted": "[REDACTED]", "n": 123456}
    finally:
        b.close()


def test_values_shorter_than_the_limit_are_not_redacted(known: Any) -> None:
    from rf.logsetup import MIN_SECRET_CHARS

    known.set_values("ws-test", ["abc12", "abcdef-long"])
    assert MIN_SECRET_CHARS == 6
    assert known.text("abc12 and abcdef-long") == "abc12 and [REDACTED]"


def test_no_credentials_means_no_work(known: Any) -> None:
    """With nothing known the per-execution check is one attribute: ``KNOWN.active`` is false."""
    known.set_values("ws-test", [])
    assert known.active is False
    known.set_values("ws-test", ["abcdef-long"])
    assert known.active is True
