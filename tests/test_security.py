"""The trust boundary, through a real `rf serve` on 127.0.0.1: what a web page, a
stray request or agent code can do (see docs/security.md).

Each test reproduces a finding against the code before the request guard:
a cross-site form body ran an agent, a rebinding Host header read sessions,
session transcripts needed no key, and agent code promoted itself with the
token it read from .rf/server.json.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent

JSON = {"content-type": "application/json"}


def _raw(url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
         ) -> tuple[int, dict[str, Any]]:
    """One request with exactly these headers (httpx would add its own Host)."""
    parsed = httpx.URL(url)
    conn = http.client.HTTPConnection(parsed.host, parsed.port, timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        all_headers = {"Host": f"{parsed.host}:{parsed.port}", **(headers or {})}
        if body is not None:
            all_headers.setdefault("Content-Length", str(len(body)))
        for key, value in all_headers.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, (json.loads(raw) if raw else {})
    finally:
        conn.close()


def _executions(server: ServerProc, env: str = "staging") -> list[dict[str, Any]]:
    r = httpx.get(f"{server.url}/api/executions", params={"env": env},
                  headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def _deploy(root: Path, name: str = "hello") -> None:
    r = run_rf_here("agents", "deploy", name, "-m", "v1", cwd=root)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- a web page


def test_cross_site_text_plain_form_cannot_run_an_agent(ws: Any, server: ServerProc) -> None:
    """<form enctype="text/plain"> with a field named '{"input":{"x":"' and value '"}}'."""
    _deploy(ws.root)
    body = b'{"input":{"x":"="}}'
    status, answer = _raw(server.url, "POST", "/staging/agents/hello", body,
                          {"Content-Type": "text/plain"})
    assert status == 415, answer
    assert answer["error"]["code"] == "unsupported_media_type"
    assert "application/json" in answer["error"]["hint"]
    # The same body as JSON runs: the refusal is about the form, not the input.
    status, answer = _raw(server.url, "POST", "/staging/agents/hello", body, JSON)
    assert status == 200, answer
    assert len(_executions(server)) == 1
    # A multipart form, and a body of no declared type, are refused as well.
    for ctype in ("multipart/form-data; boundary=x", "text/plain; charset=utf-8", None):
        headers = {"Content-Type": ctype} if ctype else {}
        status, _ = _raw(server.url, "POST", "/staging/agents/hello", body, headers)
        assert status == 415, ctype
    assert len(_executions(server)) == 1
    # curl -d's default type is accepted (the quick start uses it): a urlencoded *form* cannot
    # carry a JSON object, since it percent-encodes { and ".
    status, answer = _raw(server.url, "POST", "/staging/agents/hello", body,
                          {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, answer
    form = b"%7B%22input%22%3A%7B%22x%22%3A%22=%22%7D%7D"  # what such a form sends
    status, answer = _raw(server.url, "POST", "/staging/agents/hello", form,
                          {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "not valid JSON" in answer["error"]["message"]
    assert len(_executions(server)) == 2


def test_foreign_origin_is_refused_on_every_route(ws: Any, server: ServerProc) -> None:
    _deploy(ws.root)
    evil = {"Origin": "http://attacker.example", **JSON}
    for method, path in (("POST", "/staging/agents/hello"), ("GET", "/staging/agents/hello"),
                         ("POST", "/api/agents/hello/promote"), ("GET", "/schema")):
        status, answer = _raw(server.url, method, path, b"{}" if method == "POST" else None, evil)
        assert status == 403, (path, answer)
        assert answer["error"]["code"] == "forbidden"
    status, _ = _raw(server.url, "POST", "/staging/agents/hello", b"{}", {"Origin": "null", **JSON})
    assert status == 403
    # rf's own pages (same origin as the Host asked for) keep working.
    port = httpx.URL(server.url).port
    status, answer = _raw(server.url, "POST", "/staging/agents/hello", b'{"input": {}}',
                          {"Origin": f"http://127.0.0.1:{port}", **JSON})
    assert status == 200, answer
    assert len(_executions(server)) == 1
    assert httpx.get(f"{server.url}/api/agents/hello").status_code == 401  # and the token still rules /api


def test_dns_rebinding_host_is_refused_everywhere(ws: Any, server: ServerProc) -> None:
    """A page on attacker.example rebinds its name to 127.0.0.1: the Host header gives it away."""
    _deploy(ws.root)
    r = httpx.post(f"{server.url}/staging/agents/hello", json={"input": {"name": "Ada"}, "session_id": "s1"})
    assert r.status_code == 200
    port = httpx.URL(server.url).port
    rebound = {"Host": f"attacker.example:{port}", **JSON}
    for method, path in (("POST", "/staging/agents/hello"), ("GET", "/staging/agents/hello/sessions/s1"),
                         ("GET", "/staging/agents/hello"), ("GET", "/api/health"), ("GET", "/schema"),
                         ("POST", "/staging/hooks/whatever")):
        status, answer = _raw(server.url, method, path, b"{}" if method == "POST" else None, rebound)
        assert status == 421, (path, answer)
        assert answer["error"]["code"] == "host_not_allowed"
        assert "allowed_hosts" in answer["error"]["hint"]
    assert len(_executions(server)) == 1
    # Loopback names and IP literals are this server.
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        status, _ = _raw(server.url, "GET", "/api/health", None, {"Host": host})
        assert status == 200


def test_allowed_hosts_setting(ws: Any) -> None:
    text = (ws.root / "rf.toml").read_text()
    (ws.root / "rf.toml").write_text(text.replace("[server]\n", '[server]\nallowed_hosts = ["rf.internal"]\n', 1))
    s = start_server(ws.root)
    try:
        port = httpx.URL(s.url).port
        assert _raw(s.url, "GET", "/api/health", None, {"Host": f"rf.internal:{port}"})[0] == 200
        assert _raw(s.url, "GET", "/api/health", None, {"Host": f"rf.other:{port}"})[0] == 421
        # A page served under the allowed name may call the endpoints.
        write_agent(ws.root, "hello")
        _deploy(ws.root)
        status, _ = _raw(s.url, "POST", "/staging/agents/hello", b'{"input": {}}',
                         {"Host": f"rf.internal:{port}", "Origin": "https://rf.internal", **JSON})
        assert status == 200
    finally:
        s.stop()
    (ws.root / "rf.toml").write_text(text.replace("[server]\n", "[server]\nallowed_hosts = 5\n", 1))
    r = run_rf("status", cwd=ws.root)
    assert r.returncode != 0 and "allowed_hosts must be a list" in r.stderr


# ---------------------------------------------------------------- sessions and keys


def test_session_reads_need_a_key_of_that_environment(ws: Any, server: ServerProc) -> None:
    _deploy(ws.root)
    r = httpx.post(f"{server.url}/staging/agents/hello", json={"input": {"name": "Ada"}, "session_id": "t-1"})
    assert r.status_code == 200
    url = f"{server.url}/staging/agents/hello/sessions/t-1"
    r = httpx.get(url)
    assert r.status_code == 401, r.text
    assert "rf keys create --env staging" in r.json()["error"]["hint"]
    keys = {}
    for env in ("staging", "production"):
        created = run_rf_here("keys", "create", "--env", env, "--name", "reader", "--json", cwd=ws.root)
        assert created.returncode == 0, created.stderr
        keys[env] = json.loads(created.stdout)["secret"]
    assert keys["staging"].startswith("rf_stg_") and keys["production"].startswith("rf_prd_")
    r = httpx.get(url, headers={"Authorization": f"Bearer {keys['production']}"})
    assert r.status_code == 401  # another environment's key
    assert "does not open staging" in r.json()["error"]["message"]
    r = httpx.get(url, headers={"Authorization": f"Bearer {keys['staging']}"})
    assert r.status_code == 200 and r.json()["messages"][0]["content"] == {"name": "Ada"}
    r = httpx.get(url, headers={"Authorization": f"Bearer {server.token}"})
    assert r.status_code == 200
    # Revoked: refused from the next request on.
    assert run_rf("keys", "revoke", "reader", "--env", "staging", cwd=ws.root).returncode == 0
    assert httpx.get(url, headers={"Authorization": f"Bearer {keys['staging']}"}).status_code == 401
    listed = run_rf_here("keys", "list", "--all", "--json", cwd=ws.root)
    rows = json.loads(listed.stdout)
    assert {(k["env"], k["name"], bool(k["revoked_at"])) for k in rows} == {
        ("staging", "reader", True), ("production", "reader", False)}
    assert all(k["prefix"] and k["prefix"] not in (keys["staging"], keys["production"]) for k in rows)
    # Only the hash is kept: the key is nowhere in the store.
    server.stop()
    for path in (ws.root / ".rf").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert keys["production"].encode() not in data, path
            assert keys["staging"].encode() not in data, path


def test_require_keys_closes_every_endpoint_route_and_the_cli_keeps_working(ws: Any) -> None:
    _deploy(ws.root)
    assert run_rf_here("agents", "promote", "hello", "--yes", cwd=ws.root).returncode == 0
    text = (ws.root / "rf.toml").read_text()
    (ws.root / "rf.toml").write_text(text.replace("[server]\n", "[server]\nrequire_keys = true\n", 1))
    key = json.loads(run_rf_here("keys", "create", "--env", "production", "--json", cwd=ws.root).stdout)["secret"]
    s = start_server(ws.root)
    try:
        base = s.url
        for method, path in (("POST", "/production/agents/hello"), ("GET", "/production/agents/hello"),
                             ("POST", "/staging/agents/hello"), ("POST", "/production/agents/nope")):
            r = httpx.request(method, base + path, json={"input": {}} if method == "POST" else None)
            assert r.status_code == 401, (path, r.text)
        ok = httpx.post(f"{base}/production/agents/hello", json={"input": {"name": "Ada"}},
                        headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.json()["output"]["env"] == "production"
        # The fast path and the streaming path are behind the same guard.
        r = httpx.post(f"{base}/staging/agents/hello", json={"input": {}},
                       headers={"Authorization": f"Bearer {key}", "Accept": "text/event-stream"})
        assert r.status_code == 401
        # The CLI and dashboard go through the management API with the token: unchanged.
        r = run_rf("invoke", "hello", '{"name": "Bo"}', "--env", "production", cwd=ws.root)
        assert r.returncode == 0, r.stderr
        assert "hello, Bo" in r.stdout
        # An unknown agent's 404 (to a caller with a key) does not list the others.
        r = httpx.post(f"{base}/production/agents/nope", json={"input": {}},
                       headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 404 and "hello" not in r.text
    finally:
        s.stop()


def test_a_non_loopback_bind_forces_keys(ws: Any) -> None:
    _deploy(ws.root)
    s = start_server(ws.root, args=("--host", "0.0.0.0"))
    try:
        base = f"http://127.0.0.1:{httpx.URL(s.url).port}"
        r = httpx.post(f"{base}/staging/agents/hello", json={"input": {}})
        assert r.status_code == 401, r.text
    finally:
        s.stop()
    out = s.proc.stdout.read() if s.proc.stdout else ""
    assert "endpoint keys required (listening beyond this machine)" in out


def test_unknown_agent_404_lists_no_other_agent(ws: Any, server: ServerProc) -> None:
    write_agent(ws.root, "secret-project")
    _deploy(ws.root, "secret-project")
    r = httpx.post(f"{server.url}/staging/agents/nope", json={"input": {}})
    assert r.status_code == 404
    assert "secret-project" not in r.text
    r = httpx.get(f"{server.url}/staging/agents/nope")
    assert r.status_code == 404 and "secret-project" not in r.text


# ---------------------------------------------------------------- agent code

SELF_PROMOTER = '''
import json, os, urllib.request

def _call(base, token, path, body, extra=None):
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json", **(extra or {})}
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()

def handle(input, ctx):
    info = json.load(open(os.path.join(input["workspace"], ".rf", "server.json")))
    if input.get("orphan"):
        # Leave the worker's process tree: fork, setsid, fork again; the grandchild calls.
        r, w = os.pipe()
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(0.3)  # the middle process is gone: re-parented
                status, text = _call(info["url"], info["token"], "/api/agents/evil/promote", {})
                os.write(w, json.dumps([status, text, os.getppid()]).encode())
                os._exit(0)
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        status, text, ppid = json.loads(data)
        return {"status": status, "answer": text, "ppid": ppid}
    # A proxy header must not make the connection look as if it came from elsewhere.
    extra = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"} if input.get("forwarded") else None
    status, text = _call(info["url"], info["token"], "/api/agents/evil/promote", {}, extra)
    return {"status": status, "answer": text}
'''


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the peer check reads /proc (Linux)")
def test_agent_code_cannot_promote_itself_with_the_token(ws: Any, server: ServerProc) -> None:
    write_agent(ws.root, "evil", code="import time\n" + SELF_PROMOTER)
    _deploy(ws.root, "evil")
    for orphan, forwarded in ((False, False), (False, True), (True, False)):
        r = httpx.post(f"{server.url}/staging/agents/evil",
                       json={"input": {"workspace": str(ws.root), "orphan": orphan, "forwarded": forwarded}},
                       timeout=60)
        assert r.status_code == 200, r.text
        out = r.json()["output"]
        assert out["status"] == 403, out
        assert "agent code" in out["answer"]
        if orphan:
            assert out["ppid"] == server.pid  # the server adopted it (child subreaper)
    agents = httpx.get(f"{server.url}/api/agents/evil", headers={"Authorization": f"Bearer {server.token}"}).json()
    assert agents["production_commit"] is None
    releases = httpx.get(f"{server.url}/api/releases", headers={"Authorization": f"Bearer {server.token}"}).json()
    assert releases == []
    # The same call from outside the server's process tree (a person's CLI) works.
    r = run_rf("agents", "promote", "evil", "--yes", cwd=ws.root)
    assert r.returncode == 0, r.stderr


def test_orphans_the_server_adopts_are_reaped(ws: Any, server: ServerProc) -> None:
    code = (
        "import os, time\n"
        "def handle(input, ctx):\n"
        "    if os.fork() == 0:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(0.2)\n"
        "            os._exit(0)\n"
        "        os._exit(0)\n"
        "    os.wait()\n"
        "    return 'ok'\n"
    )
    write_agent(ws.root, "forker", code=code)
    _deploy(ws.root, "forker")
    for _ in range(3):
        assert httpx.post(f"{server.url}/staging/agents/forker", json={"input": {}}).status_code == 200

    def zombies() -> list[int]:
        found = []
        for task in Path(f"/proc/{server.pid}/task").iterdir():
            for pid in (task / "children").read_text().split():
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] == "Z":
                    found.append(int(pid))
        return found

    if not sys.platform.startswith("linux"):
        pytest.skip("Linux only")
    deadline = time.monotonic() + 10
    while len(zombies()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(zombies()) == 3  # adopted, exited, not yet reaped: this is what would pile up
    # The reaper scans every 2 s and reaps what stayed a zombie across two scans.
    deadline = time.monotonic() + 15
    while zombies() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert zombies() == []


def test_websockets_are_refused(ws: Any, server: ServerProc) -> None:
    port = httpx.URL(server.url).port
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /staging/agents/hello HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        answer = sock.recv(4096)
    assert not answer.startswith(b"HTTP/1.1 101")
