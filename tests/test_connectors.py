"""Connectors: one instance per environment, real HTTP to fake APIs on 127.0.0.1.

The fake APIs are real ``ThreadingHTTPServer``s that record every request, so
the tests see exactly what a remote API would: the URL, the auth header, the
body, and how many times a request was retried. Agents run in real worker
processes through ``invoke``/``run_test``; secrets live in a real keyring
(rf's file backend under a tmp ``XDG_DATA_HOME``).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from conftest import run_rf, run_rf_here, start_server, write_agent
from rf.client import Backend, HttpBackend, LocalBackend, open_local
from rf.config import snapshot_dir
from rf.errors import Conflict, ConnectorError, NotFound, ProductionReadOnly, RfError, UsageError
from rf.services.host import HostCall

SECRET = "s3cr3t-Tok3n-do-not-leak"

CALLER_TOML = 'description = "calls connectors"\nentrypoint = "agent:handle"\ntimeout_s = 20\nconnectors = ["crm"]\n'
CALLER_PY = '''
def handle(input, ctx):
    op = input.get("op", "call")
    if op == "tool":
        tool = ctx.connectors.tool("crm", "get-customer")
        return {"name": tool.name, "description": tool.description, "parameters": tool.parameters,
                "result": tool(id="7")}
    return ctx.connectors.call(input.get("slug", "crm"), input.get("resource", "get-customer"),
                               mock=input.get("mock", False), **input.get("params", {}))
'''


# ---------------------------------------------------------------- a fake remote API


class FakeAPI:
    """A real HTTP server on 127.0.0.1 that records requests and answers by path.

    - ``/slow...`` sleeps 1 s before answering;
    - ``/flaky...`` always answers 503;
    - ``/echo-auth`` answers 401 with the Authorization header in the body
      (an API that echoes what it got — the error must not show it);
    - ``/status/<code>`` answers that status with a long body;
    - ``/quiet`` answers ``{"ok": true}`` (echoes nothing);
    - anything else: 200 with ``{"server", "method", "path", "query", "body"}``.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                path, _, query = self.path.partition("?")
                record = {"method": self.command, "path": path, "query": query,
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": json.loads(raw) if raw else None}
                with api._lock:
                    api.requests.append(record)
                status, payload = 200, {"server": api.name, "method": self.command, "path": path,
                                        "query": query, "body": record["body"]}
                if path.startswith("/slow"):
                    time.sleep(1.0)
                elif path.startswith("/flaky"):
                    status, payload = 503, {"error": "try later"}
                elif path == "/echo-auth":
                    status, payload = 401, {"error": "bad token", "got": self.headers.get("Authorization"),
                                            "key": query}
                elif path == "/quiet":
                    payload = {"ok": True}
                elif path.startswith("/status/"):
                    status, payload = int(path.rsplit("/", 1)[1]), {"error": "nope " + "x" * 2000}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def api_staging() -> Iterator[FakeAPI]:
    api = FakeAPI("staging-api")
    yield api
    api.stop()


@pytest.fixture
def api_production() -> Iterator[FakeAPI]:
    api = FakeAPI("production-api")
    yield api
    api.stop()


@pytest.fixture(autouse=True)
def _secrets_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Secrets go to rf's file keyring under tmp — never the developer's keyring or files."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")


@pytest.fixture
def local(ws: Any) -> Iterator[LocalBackend]:
    b = open_local(ws)
    try:
        yield b
    finally:
        b.close()


def deploy_caller(b: Any, ws: Any) -> None:
    write_agent(ws.root, "caller", CALLER_PY, CALLER_TOML)
    b.deploy("caller", snapshot_dir(ws.root / "agents" / "caller"), "v1", "ada")


def host_call(b: LocalBackend, env: str = "staging") -> tuple[HostCall, Any]:
    call = HostCall(env=env, agent="t", execution_id="ex_test")
    return call, b.services.host_handler(call)


def record_text(ex: Any) -> str:
    from rf.models import to_dict

    return json.dumps(to_dict(ex))


# ---------------------------------------------------------------- per-environment resolution


def test_instances_resolve_per_environment_in_real_executions(
        local: LocalBackend, ws: Any, api_staging: FakeAPI, api_production: FakeAPI) -> None:
    b = local
    b.set_credential("crm-token", SECRET)
    b.create_connector("crm", api_production.url + "/v1", auth="bearer", credential="crm-token")
    b.add_resource("crm", "get-customer", "GET", "/customers/{id}", description="Fetch one customer")
    deploy_caller(b, ws)

    # production has no instance yet: the error says how to get one
    b.promote("caller", "ada")
    ex = b.invoke("production", "caller", {"params": {"id": "42"}})
    assert ex.status == "failed"
    assert "connector 'crm' has no production instance: publish it with rf connectors publish crm" in (ex.error or "")
    assert api_production.requests == []

    published = b.publish_connector("crm", "ada")
    assert published.changed and published.release_id and published.summary == (
        f"new connector (1 resource); production settings copied from staging, none were prepared "
        f"(base URL {api_production.url}/v1)")
    # staging moves to the staging API; production keeps what was published
    b.edit_connector("crm", base_url=api_staging.url + "/v1")

    staging = b.invoke("staging", "caller", {"params": {"id": "42"}})
    assert staging.status == "succeeded", staging.error
    assert staging.output["server"] == "staging-api" and staging.output["path"] == "/v1/customers/42"
    production = b.invoke("production", "caller", {"params": {"id": "42"}})
    assert production.status == "succeeded", production.error
    assert production.output["server"] == "production-api"
    test = b.run_test("caller", snapshot_dir(ws.root / "agents" / "caller"), {"params": {"id": "a b/c"}})
    assert test.output["server"] == "staging-api" and test.output["path"] == "/v1/customers/a%20b%2Fc"

    assert [r["headers"]["authorization"] for r in api_staging.requests] == [f"Bearer {SECRET}"] * 2
    assert [r["headers"]["authorization"] for r in api_production.requests] == [f"Bearer {SECRET}"]
    for ex in (staging, production, test):
        assert SECRET not in record_text(ex)

    # the tool view of a resource (for LLM function calling)
    tool = b.invoke("staging", "caller", {"op": "tool"})
    assert tool.status == "succeeded", tool.error
    assert tool.output["name"] == "crm__get-customer"
    assert tool.output["description"] == "Fetch one customer"
    assert tool.output["parameters"] == {"type": "object", "properties": {"id": {"type": "string"}},
                                         "required": ["id"]}
    assert tool.output["result"]["path"] == "/v1/customers/7"

    # staging's base URL is staging's own setting: nothing to publish (production keeps its own)
    assert b.diff_connector("crm").summary == "no changes"
    assert [i for i in b.services.release_items() if i.kind == "connector"] == []
    b.close()
    data = ws.db_path.read_bytes() + (ws.db_path.with_suffix(".duckdb.wal").read_bytes()
                                      if ws.db_path.with_suffix(".duckdb.wal").exists() else b"")
    assert SECRET.encode() not in data


@pytest.mark.parametrize("auth,kwargs,where", [
    ("bearer", {}, ("header", "authorization", f"Bearer {SECRET}")),
    ("api-key", {"api_key_header": "X-Api-Key"}, ("header", "x-api-key", SECRET)),
    ("api-key", {"api_key_query": "key"}, ("query", "key", SECRET)),
    ("basic", {}, ("header", "authorization", "Basic " + base64.b64encode(f"ada:{SECRET}".encode()).decode())),
])
def test_auth_carries_the_credential_and_never_leaks(local: LocalBackend, ws: Any, api_staging: FakeAPI,
                                                      auth: str, kwargs: dict[str, str],
                                                      where: tuple[str, str, str]) -> None:
    b = local
    value = f"ada:{SECRET}" if auth == "basic" else SECRET
    b.set_credential("crm-token", value)
    b.create_connector("crm", api_staging.url, auth=auth, credential="crm-token", **kwargs)
    b.add_resource("crm", "get-customer", "GET", "/quiet")
    b.add_resource("crm", "echo", "GET", "/echo-auth")
    deploy_caller(b, ws)
    ex = b.invoke("staging", "caller", {"params": {"q": "x"}})
    assert ex.status == "succeeded", ex.error
    assert ex.output == {"ok": True} and SECRET not in record_text(ex)
    kind, name, expected = where
    seen = api_staging.requests[-1]
    if kind == "header":
        assert seen["headers"][name] == expected
    else:
        from urllib.parse import parse_qs

        assert parse_qs(seen["query"]) == {name: [expected], "q": ["x"]}
    # a failing call with the credential set: the API even echoes it back, the error must not
    failed = b.invoke("staging", "caller", {"resource": "echo"})
    assert failed.status == "failed"
    assert "connector crm.echo failed: HTTP 401" in (failed.error or "") and "bad token" not in (failed.error or "")
    span = next(s for s in b.get_trace(failed.id).spans if s.name == "connectors.call")
    assert "bad token" in span.attributes["response_body"]  # the API's answer is in the trace
    text = record_text(failed) + json.dumps(span.attributes)
    assert SECRET not in text and base64.b64encode(f"ada:{SECRET}".encode()).decode() not in text
    listed = b.list_executions("staging")
    assert all(SECRET not in record_text(e) for e in listed)


def test_host_errors_are_clear(local: LocalBackend, api_staging: FakeAPI) -> None:
    b = local
    b.create_connector("crm", api_staging.url, timeout_s=0.3, retries=0)
    b.add_resource("crm", "get-customer", "GET", "/customers/{id}",
                   params_schema={"type": "object", "properties": {"id": {"type": "integer"},
                                                                   "expand": {"type": "boolean"}}})
    b.add_resource("crm", "missing", "GET", "/status/404")
    b.add_resource("crm", "slow", "GET", "/slow")
    call, handle = host_call(b)

    with pytest.raises(UsageError) as missing:
        handle("connectors.call", {"slug": "crm", "resource": "get-customer", "params": {}})
    assert "missing parameter 'id'" in missing.value.message
    assert missing.value.hint and "id (integer, required)" in missing.value.hint
    with pytest.raises(UsageError) as typed:
        handle("connectors.call", {"slug": "crm", "resource": "get-customer", "params": {"id": "abc"}})
    assert "parameter 'id'" in typed.value.message and "not of type 'integer'" in typed.value.message
    with pytest.raises(NotFound) as unknown_res:
        handle("connectors.call", {"slug": "crm", "resource": "nope"})
    assert "no resource 'nope'" in unknown_res.value.message
    assert unknown_res.value.hint and "get-customer" in unknown_res.value.hint and "slow" in unknown_res.value.hint
    with pytest.raises(NotFound) as unknown_conn:
        handle("connectors.call", {"slug": "erp", "resource": "x"})
    assert "unknown connector 'erp' in staging" in unknown_conn.value.message
    assert api_staging.requests == []  # nothing above reached the network

    with pytest.raises(ConnectorError) as status:
        handle("connectors.call", {"slug": "crm", "resource": "missing"})
    assert status.value.status == 404 and status.value.http_status == 502
    msg = status.value.message
    assert msg == "connector crm.missing failed: HTTP 404 Not Found"  # no URL, no body
    body = status.value.body or ""
    assert body.startswith('{"error": "nope xxx') and len(body) < 2100  # the body is truncated (~2000 characters)
    assert status.value.hint and "rf connectors show crm" in status.value.hint
    assert "rf traces show ex_test --json" in status.value.hint
    attrs = call.state["span_attributes"]
    assert attrs["url"] == api_staging.url + "/status/404" and attrs["response_body"] == body
    assert attrs["error_detail"] == f"GET {api_staging.url}/status/404 answered HTTP 404 Not Found"

    with pytest.raises(ConnectorError) as slow:
        handle("connectors.call", {"slug": "crm", "resource": "slow"})
    assert slow.value.status is None and slow.value.body is None  # no answer
    assert slow.value.message == "connector crm.slow failed: timed out after 0.3 s"
    assert slow.value.hint and "--timeout" in slow.value.hint

    ok = handle("connectors.call", {"slug": "crm", "resource": "get-customer", "params": {"id": 5, "expand": True}})
    assert ok["path"] == "/customers/5" and ok["query"] == "expand=true"


def test_agent_code_catches_connector_errors(local: LocalBackend, ws: Any, api_staging: FakeAPI) -> None:
    """A failed call raises rf.ConnectorError inside the agent, with the status the API answered
    (None when it did not answer); other mistakes stay UsageError/NotFound."""
    b = local
    b.create_connector("crm", api_staging.url, timeout_s=0.3, retries=0)
    b.add_resource("crm", "missing", "GET", "/status/404")
    b.add_resource("crm", "slow", "GET", "/slow")
    code = (
        "from rf import ConnectorError, RfError\n"
        "def handle(input, ctx):\n"
        "    out = []\n"
        "    for resource in ('missing', 'slow', 'no-such-resource'):\n"
        "        try:\n"
        "            ctx.connectors.call('crm', resource)\n"
        "        except ConnectorError as exc:\n"
        "            out.append(['connector', exc.status, 'HTTP 404' in exc.message or 'timed out' in exc.message,\n"
        "                        (exc.body or '')[:15]])\n"
        "        except RfError as exc:\n"
        "            out.append([type(exc).__name__, None, 'no resource' in exc.message, ''])\n"
        "    return out\n")
    ex = b.run_test("caller", {"agent.toml": CALLER_TOML.encode(), "agent.py": code.encode()}, {})
    assert ex.status == "succeeded", ex.error
    assert ex.output == [["connector", 404, True, '{"error": "nope'], ["connector", None, True, ""],
                         ["NotFound", None, True, ""]]
    spans = [s for s in b.get_trace(ex.id).spans if s.name == "connectors.call"]
    assert len(spans) == 3 and all(s.status == "error" for s in spans)


def test_a_call_gets_only_the_time_its_execution_has_left(local: LocalBackend, ws: Any,
                                                         api_staging: FakeAPI) -> None:
    """The connector allows 10 s and the API takes 1 s, but the agent's timeout_s is 0.5 s: the call
    is cut short when the execution's time runs out, and says so (it does not hold the execution
    past its timeout)."""
    b = local
    b.create_connector("crm", api_staging.url, timeout_s=10, retries=2)
    b.add_resource("crm", "slow", "GET", "/slow")
    toml = CALLER_TOML.replace("timeout_s = 20", "timeout_s = 0.5")
    code = "def handle(input, ctx):\n    return ctx.connectors.call('crm', 'slow')\n"
    ex = b.run_test("caller", {"agent.toml": toml.encode(), "agent.py": code.encode()}, {})
    assert ex.status == "failed"
    span = next(s for s in b.get_trace(ex.id).spans if s.name == "connectors.call")
    assert span.error == "connector crm.slow failed: no answer before the execution's time ran out"
    assert span.attributes["error_detail"].startswith(f"GET {api_staging.url}/slow: ")
    assert span.attributes.get("attempts") == 1  # no retry with no time left


def test_retries_only_for_idempotent_methods(local: LocalBackend, api_staging: FakeAPI) -> None:
    b = local
    b.create_connector("crm", api_staging.url, retries=2)
    b.add_resource("crm", "get-flaky", "GET", "/flaky")
    b.add_resource("crm", "post-flaky", "POST", "/flaky")
    call, handle = host_call(b)
    with pytest.raises(RfError) as get:
        handle("connectors.call", {"slug": "crm", "resource": "get-flaky"})
    assert get.value.message == "connector crm.get-flaky failed: HTTP 503 Service Unavailable after 3 attempts"
    assert [r["method"] for r in api_staging.requests] == ["GET"] * 3
    assert call.state["span_attributes"]["attempts"] == 3 and call.state["span_attributes"]["status"] == 503
    api_staging.requests.clear()
    with pytest.raises(RfError):
        handle("connectors.call", {"slug": "crm", "resource": "post-flaky", "params": {"a": 1}})
    assert [(r["method"], r["body"]) for r in api_staging.requests] == [("POST", {"a": 1})]

    # connection refused: retried, then a clear error naming the URL
    b.edit_connector("crm", base_url="http://127.0.0.1:9", retries=1)
    with pytest.raises(RfError) as refused:
        handle("connectors.call", {"slug": "crm", "resource": "get-flaky"})
    assert refused.value.message == "connector crm.get-flaky failed: could not connect (2 attempts)"
    assert call.state["span_attributes"]["error_detail"].startswith(
        "GET http://127.0.0.1:9/flaky could not connect (2 attempts): ")


def test_mock_mode_makes_no_network_call(local: LocalBackend, ws: Any, api_staging: FakeAPI,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    b = local
    b.create_connector("crm", api_staging.url)
    b.add_resource("crm", "get-customer", "GET", "/customers/{id}", mock_response={"id": "m", "name": "Mock"})
    b.add_resource("crm", "no-mock", "GET", "/x")
    deploy_caller(b, ws)
    per_call = b.invoke("staging", "caller", {"params": {"id": "1"}, "mock": True})
    assert per_call.output == {"id": "m", "name": "Mock"}
    b.edit_connector("crm", mock=True)
    assert b.invoke("staging", "caller", {"params": {"id": "1"}}).output == {"id": "m", "name": "Mock"}
    no_mock = b.invoke("staging", "caller", {"resource": "no-mock"})
    assert no_mock.status == "failed" and "has no mock response" in (no_mock.error or "")
    b.edit_connector("crm", mock=False)
    monkeypatch.setenv("RF_CONNECTOR_MOCK", "1")
    _, handle = host_call(b)
    assert handle("connectors.call", {"slug": "crm", "resource": "get-customer", "params": {"id": "1"}})["id"] == "m"
    assert api_staging.requests == []
    monkeypatch.delenv("RF_CONNECTOR_MOCK")
    real = handle("connectors.call", {"slug": "crm", "resource": "get-customer", "params": {"id": "1"}})
    assert real["server"] == "staging-api"
    assert len(api_staging.requests) == 1


def test_unknown_credential_at_call_time_is_clear(local: LocalBackend, api_staging: FakeAPI) -> None:
    b = local
    b.set_credential("crm-token", SECRET)
    b.create_connector("crm", api_staging.url, auth="bearer", credential="crm-token")
    b.add_resource("crm", "get", "GET", "/")
    b.delete_credential("crm-token")
    _, handle = host_call(b)
    with pytest.raises(NotFound) as info:
        handle("connectors.call", {"slug": "crm", "resource": "get"})
    assert "credential 'crm-token' is not set" in info.value.message
    assert info.value.hint and "rf credentials set crm-token" in info.value.hint
    assert api_staging.requests == []


# ---------------------------------------------------------------- validation: nothing stored half-way


def test_bad_definitions_are_refused_and_store_nothing(local: LocalBackend) -> None:
    b = local
    connector_cases: list[tuple[dict[str, Any], str]] = [
        ({"base_url": "ftp://x.example"}, "not an http(s) URL"),
        ({"base_url": "https://user:pw@x.example"}, "must not contain a user name or password"),
        ({"base_url": "https://x.example", "auth": "bearer"}, "needs a credential"),
        ({"base_url": "https://x.example", "auth": "magic"}, "unknown auth"),
        ({"base_url": "https://x.example", "headers": {"Authorization": "Bearer x"}}, "would store a secret"),
        ({"base_url": "https://x.example", "timeout_s": 0}, "timeout must be"),
        ({"base_url": "https://x.example", "retries": -1}, "retries must be"),
    ]
    for kwargs, expected in connector_cases:
        with pytest.raises(UsageError) as info:
            b.create_connector("crm", **kwargs)
        assert expected in info.value.message, (kwargs, info.value.message)
    with pytest.raises(NotFound) as cred:
        b.create_connector("crm", "https://x.example", auth="bearer", credential="ghost")
    assert "unknown credential 'ghost'" in cred.value.message
    assert cred.value.hint and "rf credentials set ghost" in cred.value.hint
    with pytest.raises(UsageError):
        b.create_connector("Bad Slug", "https://x.example")
    assert b.list_connectors() == []

    b.create_connector("crm", "https://x.example")
    with pytest.raises(Conflict):
        b.create_connector("crm", "https://y.example")
    resource_cases: list[tuple[dict[str, Any], str]] = [
        ({"method": "FETCH", "path": "/a"}, "unknown method"),
        ({"method": "GET", "path": "a"}, "must start with '/'"),
        ({"method": "GET", "path": "/a/{id"}, "unbalanced braces"),
        ({"method": "GET", "path": "/a", "params_schema": {"type": "objec"}}, "invalid JSON Schema at $.type"),
        ({"method": "GET", "path": "/a", "params_schema": {"type": "string"}}, "must have type 'object'"),
    ]
    for kwargs, expected in resource_cases:
        with pytest.raises(UsageError) as info:
            b.add_resource("crm", "r", **kwargs)
        assert expected in info.value.message, (kwargs, info.value.message)
    with pytest.raises(NotFound):
        b.add_resource("erp", "r", "GET", "/")
    with pytest.raises(NotFound) as res:
        b.edit_resource("crm", "ghost", path="/x")
    assert "no resource 'ghost'" in res.value.message
    assert b.get_connector("crm").resources == []
    before = b.get_connector("crm").content_hash
    with pytest.raises(UsageError):
        b.edit_connector("crm", base_url="mailto:x")
    assert b.get_connector("crm").content_hash == before


def test_production_is_read_only_in_the_service(local: LocalBackend) -> None:
    b = local
    b.create_connector("crm", "https://x.example")
    b.add_resource("crm", "r", "GET", "/r")
    b.publish_connector("crm", "ada")
    attempts: list[Callable[[], Any]] = [
        lambda: b.create_connector("erp", "https://x.example", env="production"),
        lambda: b.edit_connector("crm", env="production", timeout_s=5),
        lambda: b.delete_connector("crm", env="production"),
        lambda: b.add_resource("crm", "s", "GET", "/s", env="production"),
        lambda: b.edit_resource("crm", "r", env="production", path="/x"),
        lambda: b.remove_resource("crm", "r", env="production"),
        lambda: b.import_openapi("crm", OPENAPI_JSON, env="production"),
    ]
    for attempt in attempts:
        with pytest.raises(ProductionReadOnly) as info:
            attempt()
        assert "production is read-only" in info.value.message
        assert info.value.hint and "staging" in info.value.hint and "publish" in info.value.hint
    prod = b.get_connector("crm", "production")
    assert prod.timeout_s == 30 and [r.path for r in prod.resources] == ["/r"]
    with pytest.raises(UsageError):
        b.edit_connector("crm", env="qa")


def test_diff_publish_delete_and_rollback(local: LocalBackend) -> None:
    b = local
    b.create_connector("crm", "https://v1.example", headers={"Accept-Language": "en"})
    b.add_resource("crm", "get-customer", "GET", "/customers/{id}", mock_response={"id": 1})
    b.add_resource("crm", "old", "GET", "/old")
    first = b.publish_connector("crm", "ada")
    assert first.before is None and first.after
    assert b.get_connector("crm", "production").content_hash == b.get_connector("crm").content_hash
    assert not b.publish_connector("crm", "ada").changed

    b.edit_connector("crm", base_url="https://v2.example", retries=0)
    assert not b.diff_connector("crm").changed  # staging's settings are staging's own
    b.edit_resource("crm", "get-customer", path="/c/{id}", mock_response={"id": 2})
    b.remove_resource("crm", "old")
    b.add_resource("crm", "list", "GET", "/customers")
    d = b.diff_connector("crm")
    assert d.summary == "+1 resource, -1 resource, 1 modified" and d.config == []
    assert d.settings is not None and d.settings.staging is not None and d.settings.production is not None
    assert (d.settings.staging["base_url"], d.settings.production["base_url"]) == (
        "https://v2.example", "https://v1.example")
    statuses = {r.slug: r.status for r in d.resources}
    assert statuses == {"get-customer": "modified", "list": "added", "old": "removed"}
    modified = next(r for r in d.resources if r.slug == "get-customer")
    assert {c.name for c in modified.changes} == {"path", "mock_response"}

    second = b.publish_connector("crm", "ada", "v2")
    prod = b.get_connector("crm", "production")
    # the resources reach production; production's settings stay its own
    assert {r.slug for r in prod.resources} == {"get-customer", "list"}
    assert (prod.base_url, prod.retries) == ("https://v1.example", 2)
    assert prod.resources == b.get_connector("crm").resources
    assert not b.diff_connector("crm").changed

    # rollback restores the first published resources (from their snapshot), staging untouched
    assert second.release_id is not None
    b.services.rollback_release(second.release_id)
    prod = b.get_connector("crm", "production")
    assert prod.base_url == "https://v1.example" and {r.slug for r in prod.resources} == {"get-customer", "old"}
    assert b.get_connector("crm").base_url == "https://v2.example"

    # deleting in staging is a pending change too: publishing removes production's instance
    b.delete_connector("crm")
    assert b.diff_connector("crm").summary.startswith("deleted in staging")
    gone = b.publish_connector("crm", "ada")
    assert gone.changed and gone.after is None
    with pytest.raises(NotFound):
        b.get_connector("crm", "production")
    with pytest.raises(NotFound):
        b.diff_connector("crm")


def test_deploy_warns_about_connectors_without_staging_instance(local: LocalBackend, ws: Any) -> None:
    write_agent(ws.root, "caller", CALLER_PY, CALLER_TOML)
    result = local.deploy("caller", snapshot_dir(ws.root / "agents" / "caller"), "v1", "ada")
    assert any("connector 'crm'" in w and "rf connectors create crm" in w for w in result.warnings)


# ---------------------------------------------------------------- OpenAPI import

OPENAPI_JSON = json.dumps({
    "openapi": "3.0.3",
    "info": {"title": "CRM", "version": "1"},
    "servers": [{"url": "https://{region}.crm.example/v1", "variables": {"region": {"default": "eu"}}}],
    "paths": {
        "/customers/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            "get": {
                "operationId": "getCustomer", "summary": "Get a customer",
                "parameters": [{"$ref": "#/components/parameters/Expand"},
                               {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {
                    "example": {"id": 1, "name": "Ada"}}}}},
            },
        },
        "/orders": {
            "post": {
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/NewOrder"}}}},
                "responses": {"201": {"description": "created"}},
            },
        },
    },
    "components": {
        "parameters": {"Expand": {"name": "expand", "in": "query", "schema": {"type": "boolean"}}},
        "schemas": {"NewOrder": {"type": "object", "required": ["sku"],
                                 "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}},
    },
})

OPENAPI_YAML = """\
openapi: 3.1.0
info: {title: Tickets, version: "1"}
servers:
  - url: https://tickets.example/api
paths:
  /tickets:
    get:
      operationId: listTickets
      parameters:
        - {name: status, in: query, required: true, schema: {type: string, enum: [open, closed]}}
      responses:
        200:
          description: ok
          content:
            application/json:
              examples:
                one: {value: [{id: 7}]}
"""


def test_import_openapi_json_and_yaml(local: LocalBackend, api_staging: FakeAPI) -> None:
    b = local
    result = b.import_openapi("crm", OPENAPI_JSON)
    assert result.created and result.base_url == "https://eu.crm.example/v1"
    assert result.added == ["get-customer", "post-orders"]
    c = b.get_connector("crm")
    get, post = c.resources
    assert (get.slug, get.method, get.path, get.name) == ("get-customer", "GET", "/customers/{id}", "Get a customer")
    assert get.params_schema == {"type": "object", "required": ["id"],
                                 "properties": {"id": {"type": "integer"}, "expand": {"type": "boolean"}}}
    assert get.mock_response == {"id": 1, "name": "Ada"}
    assert post.method == "POST" and post.params_schema == {
        "type": "object", "required": ["sku"],
        "properties": {"sku": {"type": "string"}, "qty": {"type": "integer"}}}
    again = b.import_openapi("crm", OPENAPI_JSON)
    assert not again.created and again.unchanged == ["get-customer", "post-orders"]

    # calls are validated against the imported schemas, and bodies are sent as JSON
    b.edit_connector("crm", base_url=api_staging.url)
    _, handle = host_call(b)
    with pytest.raises(UsageError, match="missing parameter 'sku'"):
        handle("connectors.call", {"slug": "crm", "resource": "post-orders", "params": {"qty": 1}})
    handle("connectors.call", {"slug": "crm", "resource": "post-orders", "params": {"sku": "A", "qty": 2}})
    assert api_staging.requests[-1]["body"] == {"sku": "A", "qty": 2}

    yaml_result = b.import_openapi("tickets", OPENAPI_YAML)
    (tickets,) = b.get_connector("tickets").resources
    assert yaml_result.created and tickets.slug == "list-tickets"
    assert tickets.params_schema == {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["open", "closed"]}}}
    assert tickets.mock_response == [{"id": 7}]


@pytest.mark.parametrize("spec,expected", [
    ("{not json: [", "neither valid JSON nor valid YAML"),
    ('{"swagger": "2.0", "paths": {}}', "Swagger/OpenAPI 2"),
    ('{"openapi": "3.0.0", "paths": {}}', "has no paths"),
    ('{"openapi": "3.0.0", "paths": {"/a": {"get": {"parameters": [{"in": "query"}]}}}}', "no valid 'name'"),
    ('{"openapi": "3.0.0", "paths": {"/a": {"get": {"parameters": [{"$ref": "#/nope"}]}}}}', "points at nothing"),
    ('{"openapi": "3.0.0", "paths": {"/a": {"get": {}}}}', "no absolute servers[0].url"),
    ('{"openapi": "3.0.0", "servers": [{"url": "https://x.example"}], "paths": {"/a": {"get": {"parameters": '
     '[{"name": "q", "in": "query", "schema": {"type": 5}}]}}}}', "invalid JSON Schema"),
])
def test_invalid_openapi_is_refused_and_stores_nothing(local: LocalBackend, spec: str, expected: str) -> None:
    with pytest.raises(UsageError) as info:
        local.import_openapi("crm", spec)
    assert expected in info.value.message
    assert local.list_connectors() == []


# ---------------------------------------------------------------- the same over HTTP and the CLI


def test_http_backend_and_cli(ws: Any, tmp_path: Path) -> None:
    srv = start_server(ws.root)
    try:
        b = cast(Backend, HttpBackend(srv.url, srv.token, ws))
        b.set_credential("crm-token", SECRET, "CRM API token")
        created = b.create_connector("crm", "https://crm.example", auth="api-key", credential="crm-token",
                                     api_key_query="key", headers={"X-Team": "a"})
        assert created.api_key_query == "key" and created.api_key_header is None
        b.add_resource("crm", "get-customer", "GET", "/customers/{id}",
                       params_schema={"type": "object", "properties": {"id": {"type": "string"}}},
                       mock_response={"id": "x"})
        with pytest.raises(ProductionReadOnly) as info:
            b.edit_connector("crm", env="production", timeout_s=1)
        assert info.value.hint and "rf connectors publish crm" in info.value.hint
        with pytest.raises(UsageError):
            b.add_resource("crm", "bad", "GET", "/b", params_schema={"type": "objec"})
        assert b.publish_connector("crm", "ada").changed
        assert b.remove_resource("crm", "get-customer").resources == []
        assert b.diff_connector("crm").summary == "-1 resource"
        assert [c.slug for c in b.list_connectors("production")] == ["crm"]
        usage = b.credential_usage("crm-token")
        assert usage.production == ["connector crm (production)"]

        # the CLI goes through the same server
        r = run_rf("connectors", "edit", "crm", "--env", "production", "--timeout", "3", cwd=ws.root)
        assert r.returncode == 1 and "production is read-only" in r.stderr and "Traceback" not in r.stderr
        spec = tmp_path / "tickets.yaml"
        spec.write_text(OPENAPI_YAML)
        r = run_rf_here("connectors", "import-openapi", "tickets", str(spec), cwd=ws.root)
        assert r.returncode == 0, r.stderr
        assert "created connector tickets" in r.stderr and "+ list-tickets" in r.stderr
        text = run_rf_here("connectors", "show", "crm", cwd=ws.root).stdout
        assert "api-key with credential crm-token (query parameter key)" in text and "X-Team: a" in text
        d = run_rf_here("connectors", "diff", "crm", cwd=ws.root).stdout
        assert "- resource get-customer" in d
        r = run_rf("connectors", "publish", "crm", cwd=ws.root)
        assert r.returncode == 2 and "--yes" in r.stderr
        r = run_rf_here("connectors", "publish", "crm", "--yes", cwd=ws.root)
        assert r.returncode == 0 and "published connector crm" in r.stderr
        assert [c.slug for c in b.list_connectors()] == ["crm", "tickets"]
    finally:
        srv.stop()
    log = srv.proc.stdout.read() if srv.proc.stdout else ""
    assert SECRET not in log
