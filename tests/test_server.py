"""The real server (``rf serve`` subprocess on 127.0.0.1) and its endpoints."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import httpx
import pytest

from conftest import HELLO_TOML, ServerProc, run_rf, run_rf_here, start_server, write_agent

FAILING = {
    "raises": "def handle(input, ctx):\n    raise RuntimeError('kaput')\n",
    "exits": "import sys\ndef handle(input, ctx):\n    sys.exit(3)\n",
    "crashes": "import os\ndef handle(input, ctx):\n    os._exit(1)\n",
    "segfaults": "import ctypes\ndef handle(input, ctx):\n    ctypes.string_at(0)\n",
    "hangs": "def handle(input, ctx):\n    while True:\n        pass\n",
}

STREAMER = (
    "def handle(input, ctx):\n"
    "    for i in range(3):\n"
    "        yield {'token': i}\n"
)


def deploy(ws: Any, name: str, *, promote: bool = False) -> None:
    """The setup, in-process (run_rf_here: the console script's entry point): the tests are the server's."""
    r = run_rf_here("agents", "deploy", name, "-m", f"deploy {name}", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    if promote:
        r = run_rf_here("agents", "promote", name, "--yes", cwd=ws.root)
        assert r.returncode == 0, r.stderr


def test_endpoints_per_environment(ws: Any, server: ServerProc) -> None:
    deploy(ws, "hello")
    r = httpx.post(f"{server.url}/staging/agents/hello", json={"input": {"name": "Ada"}})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "succeeded" and body["output"] == {"message": "hello, Ada", "env": "staging"}
    assert body["execution_id"].startswith("ex_")

    r = httpx.post(f"{server.url}/production/agents/hello", json={"input": {"name": "Ada"}})
    assert r.status_code == 404
    assert "rf agents promote hello" in r.json()["error"]["hint"]

    r = run_rf("agents", "promote", "hello", "--yes", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    r = httpx.post(f"{server.url}/production/agents/hello", json={"input": {"name": "Bo"}})
    assert r.status_code == 200 and r.json()["output"]["env"] == "production"

    d = httpx.get(f"{server.url}/production/agents/hello").json()
    assert d["env"] == "production" and d["name"] == "hello" and len(d["commit"]) == 64


def test_bad_requests(ws: Any, server: ServerProc) -> None:
    deploy(ws, "hello")
    base = server.url
    r = httpx.post(f"{base}/qa/agents/hello", json={"input": {}})
    assert r.status_code == 404 and "unknown environment" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/staging/agents/nope", json={"input": {}})
    assert r.status_code == 404 and "unknown agent" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/staging/agents/hello", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    r = httpx.post(f"{base}/staging/agents/hello", json=[1, 2])
    assert r.status_code == 400
    r = httpx.post(f"{base}/staging/agents/hello", json={"inptu": 1})
    assert r.status_code == 400 and "inptu" in r.json()["error"]["message"]
    big = {"input": "x" * (1024 * 1024 + 10)}
    r = httpx.post(f"{base}/staging/agents/hello", json=big)
    assert r.status_code == 413
    # none of the refused requests produced an execution
    assert httpx.get(f"{base}/api/executions", params={"env": "staging"},
                     headers={"Authorization": f"Bearer {server.token}"}).json() == []


def test_invoke_fast_path_answers_like_litestar(ws: Any, server: ServerProc) -> None:
    """POST /{env}/agents/{name} is served by rf.server.fastpath; with Accept: text/event-stream it
    goes to the Litestar route. Refused requests get the same answer either way."""
    deploy(ws, "hello")
    base = server.url
    cases: list[tuple[str, dict[str, Any]]] = [
        ("/qa/agents/hello", {"json": {"input": {}}}),
        ("/staging/agents/nope", {"json": {"input": {}}}),
        ("/staging/agents/hello", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
        ("/staging/agents/hello", {"json": [1, 2]}),
        ("/staging/agents/hello", {"json": {"inptu": 1}}),
        ("/staging/agents/hello", {"json": {"input": 1, "session_id": 7}}),
        ("/staging/agents/hello", {"json": {"input": "x" * (1024 * 1024 + 10)}}),
    ]
    for path, kwargs in cases:
        fast = httpx.post(base + path, **kwargs)
        headers = {**kwargs.pop("headers", {}), "accept": "text/event-stream"}
        slow = httpx.post(base + path, headers=headers, **kwargs)
        assert fast.status_code == slow.status_code and fast.status_code >= 400, (path, fast.text, slow.text)
        assert fast.json() == slow.json(), path
        assert fast.headers["content-type"].startswith("application/json")

    # A body sent without a length (chunked) is still held to the limit.
    def chunks() -> Any:
        for _ in range(300):
            yield b"x" * 4096

    r = httpx.post(f"{base}/staging/agents/hello", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "too large" in r.json()["error"]["message"]

    # The fast-path route is still documented in the OpenAPI schema.
    schema = httpx.get(f"{base}/schema/openapi.json").json()
    assert "post" in schema["paths"]["/{env}/agents/{name}"]

    # And a successful call through it records the execution it reports.
    r = httpx.post(f"{base}/staging/agents/hello", json={"input": {"name": "Ada"}, "session_id": "s1"})
    assert r.status_code == 200 and r.json()["output"]["message"] == "hello, Ada"
    shown = httpx.get(f"{base}/api/executions/{r.json()['execution_id']}",
                      headers={"Authorization": f"Bearer {server.token}"}).json()
    assert shown["env"] == "staging" and shown["session_id"] == "s1" and shown["source"] == "endpoint"


def test_management_api_needs_token(ws: Any, server: ServerProc) -> None:
    assert httpx.get(f"{server.url}/api/agents").status_code == 401
    assert httpx.get(f"{server.url}/api/agents", headers={"Authorization": "Bearer wrong"}).status_code == 401
    r = httpx.get(f"{server.url}/api/agents", headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 200 and r.json() == []
    schema = httpx.get(f"{server.url}/schema/openapi.json").json()
    assert "/staging/agents/{name}" in json.dumps(schema) or "/{env}/agents/{name}" in schema["paths"]


def test_server_json_is_private_and_removed_on_exit(ws: Any) -> None:
    srv = start_server(ws.root)
    info_file = ws.root / ".rf" / "server.json"
    try:
        assert stat.S_IMODE(os.stat(info_file).st_mode) == 0o600
        assert json.loads(info_file.read_text())["pid"] == srv.pid
    finally:
        srv.stop()
    assert not info_file.exists()


def test_stale_server_json_is_cleaned(ws: Any) -> None:
    info_file = ws.root / ".rf" / "server.json"
    info_file.write_text(json.dumps({"pid": 999999, "url": "http://127.0.0.1:9", "token": "x"}))
    r = run_rf("agents", "list", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert not info_file.exists()


def test_failing_agents_never_take_the_server_down(ws: Any, server: ServerProc) -> None:
    for name, code in FAILING.items():
        write_agent(ws.root, name, code, HELLO_TOML.replace("timeout_s = 10", "timeout_s = 1"))
        deploy(ws, name)
    deploy(ws, "hello")
    for name in FAILING:
        r = httpx.post(f"{server.url}/staging/agents/{name}", json={"input": {}}, timeout=30)
        assert r.status_code == 500, (name, r.text)
        assert r.json()["status"] == "failed" and r.json()["error"], name
        ok = httpx.post(f"{server.url}/staging/agents/hello", json={"input": {"name": name}}, timeout=30)
        assert ok.status_code == 200 and ok.json()["output"]["message"] == f"hello, {name}"
        # the same agent works again after its worker was replaced (here: it fails the same way, cleanly)
        again = httpx.post(f"{server.url}/staging/agents/{name}", json={"input": {}}, timeout=30)
        assert again.status_code == 500
    failed = run_rf("executions", "list", "--status", "failed", "--json", "--limit", "100", cwd=ws.root)
    rows = json.loads(failed.stdout)
    assert {r["agent"] for r in rows} == set(FAILING)
    errors = {r["agent"]: r["error"] for r in rows}
    assert "kaput" in errors["raises"]
    assert "3" in errors["exits"]
    assert "timed out" in errors["hangs"]
    assert server.proc.poll() is None


def test_streaming_generator_as_sse(ws: Any, server: ServerProc) -> None:
    write_agent(ws.root, "streamer", STREAMER)
    deploy(ws, "streamer")
    events = []
    with httpx.stream("POST", f"{server.url}/staging/agents/streamer", json={"input": {}},
                      headers={"Accept": "text/event-stream"}, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        event = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                events.append((event, json.loads(line.split(":", 1)[1])))
    assert [e for e in events if e[0] == "chunk"] == [("chunk", {"token": i}) for i in range(3)]
    assert events[-1][0] == "done" and events[-1][1]["status"] == "succeeded"
    # without the header, the chunks come back as one list
    r = httpx.post(f"{server.url}/staging/agents/streamer", json={"input": {}})
    assert r.json()["output"] == [{"token": 0}, {"token": 1}, {"token": 2}]


def test_cli_works_through_the_running_server(ws: Any, server: ServerProc) -> None:
    deploy(ws, "hello", promote=True)
    st = json.loads(run_rf("status", "--json", cwd=ws.root).stdout)
    assert st["backend"] == "http" and st["server_url"] == server.url
    r = run_rf("invoke", "hello", "--env", "production", "--input", '{"name": "Cy"}', "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"]["message"] == "hello, Cy"
    r = run_rf_here("test", "hello", "--input", '{"name": "T"}', "--json", cwd=ws.root)
    assert json.loads(r.stdout)["source"] == "test"
    for args in (["agents", "list"], ["agents", "show", "hello"], ["agents", "history", "hello"],
                 ["agents", "diff", "hello"], ["executions", "list", "--env", "production"]):
        r = run_rf_here(*args, cwd=ws.root)
        assert r.returncode == 0, (args, r.stderr)
    prod = json.loads(run_rf_here("executions", "list", "--env", "production", "--json", cwd=ws.root).stdout)
    assert [e["source"] for e in prod] == ["invoke"]


@pytest.mark.parametrize("port_taken", [True])
def test_port_in_use_is_a_clear_error(ws: Any, port_taken: bool) -> None:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = run_rf("serve", "--port", str(port), cwd=ws.root, timeout=30)
        assert r.returncode == 1
        assert "cannot listen" in r.stderr and "--port" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        s.close()
