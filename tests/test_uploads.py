"""Large request bodies through a running server: ``rf agents deploy``, ``rf test`` and
``rf connectors import-openapi`` with more than one request's worth of data.

Every ``/api`` route shares ``[server] max_body_bytes`` (1 MiB by default). A larger body
is sent ahead in chunks (``POST /api/uploads``) and the route is then called with
``{"upload": ID}`` (see rf.services.uploads); the CLI does it by itself. All through a real
``rf serve`` and the real ``rf`` command."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent

#: ~20 MB of incompressible bytes: the agent's data file
BIG = 20 * 1000 * 1000

BIG_PY = (
    "import hashlib, pathlib\n"
    "def handle(input, ctx):\n"
    "    data = (pathlib.Path(__file__).parent / 'data.bin').read_bytes()\n"
    "    return {'sha256': hashlib.sha256(data).hexdigest(), 'size': len(data), 'env': ctx.env}\n"
)
BIG_TOML = 'description = "Carries a big data file"\nentrypoint = "agent:handle"\ntimeout_s = 30\n'


@pytest.fixture
def big(ws: Any) -> Iterator[tuple[Any, ServerProc, str]]:
    """The workspace with agent ``big`` (agent.py + 20 MB data.bin), a running server, and the
    data file's sha256."""
    d = write_agent(ws.root, "big", code=BIG_PY, toml=BIG_TOML)
    data = os.urandom(BIG)
    (d / "data.bin").write_bytes(data)
    srv = start_server(ws.root)
    try:
        yield ws, srv, hashlib.sha256(data).hexdigest()
    finally:
        srv.stop()


def _uploads_dir(ws: Any) -> Path:
    return Path(ws.root) / ".rf" / "uploads"


def _staged(ws: Any) -> list[str]:
    d = _uploads_dir(ws)
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _auth(srv: ServerProc) -> dict[str, str]:
    return {"authorization": f"Bearer {srv.token}", "content-type": "application/json"}


def _chunk(srv: ServerProc, upload: str, offset: int, data: bytes, total: int | None = None) -> httpx.Response:
    body: dict[str, Any] = {"upload": upload, "offset": offset, "data": base64.b64encode(data).decode()}
    if total is not None:
        body["total"] = total
    return httpx.post(f"{srv.url}/api/uploads", content=json.dumps(body), headers=_auth(srv), timeout=30)


# ------------------------------------------------------------------ the CLI, through the server
def test_a_20_mb_agent_deploys_through_the_server_and_runs(big: tuple[Any, ServerProc, str]) -> None:
    ws, srv, sha = big
    started = time.monotonic()
    r = run_rf("agents", "deploy", "big", "-m", "big data", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    deployed = json.loads(r.stdout)
    assert deployed["created"] is True
    tree = deployed["commit"]["tree"]
    assert tree["data.bin"] == sha
    assert tree["agent.py"] == hashlib.sha256(BIG_PY.encode()).hexdigest()
    assert time.monotonic() - started < 15, "a 20 MB deploy should take seconds"
    # The commit is stored with those hashes (read back through the server).
    r = run_rf_here("agents", "history", "big", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    commits = json.loads(r.stdout)
    assert commits[0]["id"] == deployed["commit"]["id"] and commits[0]["tree"]["data.bin"] == sha
    # The deployed agent runs, with the whole file.
    r = httpx.post(f"{srv.url}/staging/agents/big", json={"input": {}}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["output"] == {"sha256": sha, "size": BIG, "env": "staging"}
    # Nothing is left staged.
    assert _staged(ws) == []
    # A second deploy of the same files is "no changes" (the upload path reaches the same rule).
    r = run_rf_here("agents", "deploy", "big", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["created"] is False
    assert _staged(ws) == []


def test_rf_test_runs_a_large_working_copy_through_the_server(big: tuple[Any, ServerProc, str]) -> None:
    ws, _srv, sha = big
    # Streamed (the CLI's default: chunks printed as they come) and as JSON.
    r = run_rf("test", "big", "{}", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert sha in r.stdout
    r = run_rf_here("test", "big", "{}", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    ex = json.loads(r.stdout)
    assert ex["status"] == "succeeded" and ex["output"]["sha256"] == sha and ex["commit"] == "working-copy"
    assert _staged(ws) == []


def test_a_large_openapi_document_imports_through_the_server(ws: Any) -> None:
    """``rf connectors import-openapi`` sends the document's text (not files): over 1 MiB of it
    goes the same way."""
    paths = {f"/items/{i}": {"get": {"operationId": f"get-item-{i}", "description": "x" * 4000,
                                     "responses": {"200": {"description": "ok"}}}} for i in range(400)}
    spec = {"openapi": "3.0.0", "info": {"title": "big", "version": "1"},
            "servers": [{"url": "http://127.0.0.1:9/api"}], "paths": paths}
    text = json.dumps(spec)
    assert len(text) > 1_500_000
    (Path(ws.root) / "spec.json").write_text(text)
    srv = start_server(ws.root)
    try:
        r = run_rf("connectors", "import-openapi", "crm", "spec.json", "--json", cwd=ws.root)
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["created"] is True and len(result["added"]) == 400
        assert _staged(ws) == []
    finally:
        srv.stop()


# ------------------------------------------------------------------ the chunk route itself
def test_chunks_that_do_not_fit_are_refused_with_a_clear_4xx(ws: Any, server: ServerProc) -> None:
    srv = server
    upload = "u" * 20
    first = _chunk(srv, upload, 0, b'{"files": ', total=100)
    assert first.status_code == 200, first.text
    assert first.json() == {"upload": upload, "received": 10, "total": 100, "complete": False}
    # Staged privately under .rf/uploads while it is in progress.
    folder = _uploads_dir(ws)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    [part] = folder.iterdir()
    assert stat.S_IMODE(part.stat().st_mode) == 0o600
    # A chunk that does not start where the upload ends: 409, saying where to go on.
    r = _chunk(srv, upload, 4, b"xx", total=100)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["hint"] == "send the chunk that starts at offset 10"
    # The upload is still there, unchanged: the right offset goes on.
    assert _chunk(srv, upload, 10, b"{}", total=100).json()["received"] == 12
    # An unknown upload (past offset 0): 404.
    r = _chunk(srv, "v" * 20, 50, b"xx", total=100)
    assert r.status_code == 404 and "offset 0" in r.json()["error"]["hint"], r.text
    # A total over the limit (200 MiB by default) is refused at the first chunk: 413.
    r = _chunk(srv, "w" * 20, 0, b"x", total=300 * 1024 * 1024)
    assert r.status_code == 413 and "max_upload_bytes" in r.json()["error"]["hint"], r.text
    # A chunk past the declared total: 400, and that upload is dropped.
    r = _chunk(srv, "y" * 20, 0, b"0123456789", total=5)
    assert r.status_code == 400 and "past the upload's total" in r.json()["error"]["message"], r.text
    # A total that changes between chunks: 400 (the first chunk fixed it), dropped.
    r = _chunk(srv, upload, 12, b"x", total=200)
    assert r.status_code == 400 and "started with total 100" in r.json()["error"]["message"], r.text
    assert _staged(ws) == []
    # Ids are checked; base64 is checked; unknown fields are refused.
    assert _chunk(srv, "../etc/passwd", 0, b"x", total=1).status_code == 400
    bad = {"upload": "z" * 20, "offset": 0, "total": 1, "data": "not base64!"}
    r = httpx.post(f"{srv.url}/api/uploads", json=bad, headers=_auth(srv))
    assert r.status_code == 400 and "base64" in r.json()["error"]["message"], r.text
    r = httpx.post(f"{srv.url}/api/uploads", json={**bad, "data": "eA==", "path": "x"}, headers=_auth(srv))
    assert r.status_code == 400 and "unknown field 'path'" in r.json()["error"]["message"], r.text
    # Every chunk passes the one request guard: JSON only, token required.
    r = httpx.post(f"{srv.url}/api/uploads", content=json.dumps(bad),
                   headers={"authorization": f"Bearer {srv.token}", "content-type": "text/plain"})
    assert r.status_code == 415, r.text
    r = httpx.post(f"{srv.url}/api/uploads", json={**bad, "data": "eA=="})
    assert r.status_code == 401, r.text
    assert _staged(ws) == []


def test_a_route_takes_only_a_complete_upload_once(ws: Any, server: ServerProc) -> None:
    srv = server
    deploy = f"{srv.url}/api/agents/hello/deploy"
    files = {"agent.toml": base64.b64encode(b'entrypoint = "agent:handle"\n').decode(),
             "agent.py": base64.b64encode(b"def handle(input, ctx):\n    return 'up'\n").decode()}
    body = json.dumps({"files": files, "message": "by upload"}).encode()
    upload = "k" * 24
    assert _chunk(srv, upload, 0, body[:20], total=len(body)).status_code == 200
    # Not complete yet: 400 that says so (and the part stays).
    r = httpx.post(deploy, json={"upload": upload}, headers=_auth(srv))
    assert r.status_code == 400 and f"20 of {len(body)} bytes" in r.json()["error"]["message"], r.text
    done = _chunk(srv, upload, 20, body[20:], total=len(body))
    assert done.json()["complete"] is True
    # Nothing else may ride along with the upload id.
    r = httpx.post(deploy, json={"upload": upload, "message": "other"}, headers=_auth(srv))
    assert r.status_code == 400 and "no other field (message)" in r.json()["error"]["message"], r.text
    r = httpx.post(deploy, json={"upload": upload}, headers=_auth(srv))
    assert r.status_code == 200, r.text
    assert r.json()["commit"]["message"] == "by upload"
    # Used once: it is gone.
    r = httpx.post(deploy, json={"upload": upload}, headers=_auth(srv))
    assert r.status_code == 404 and "used already" in r.json()["error"]["hint"], r.text
    # An uploaded body is checked like an inline one (here: a field the route does not take).
    bad = json.dumps({"files": files, "colour": "red"}).encode()
    assert _chunk(srv, "m" * 24, 0, bad, total=len(bad)).status_code == 200
    r = httpx.post(deploy, json={"upload": "m" * 24}, headers=_auth(srv))
    assert r.status_code == 400 and "unknown field 'colour'" in r.json()["error"]["message"], r.text
    # A route that does not accept uploads treats "upload" as the unknown field it is.
    r = httpx.post(f"{srv.url}/api/prompts", json={"upload": upload}, headers=_auth(srv))
    assert r.status_code == 400 and "unknown field 'upload'" in r.json()["error"]["message"], r.text
    assert _staged(ws) == []


def test_idle_uploads_expire_and_a_server_start_clears_them(ws: Any) -> None:
    srv = start_server(ws.root)
    try:
        assert _chunk(srv, "a" * 20, 0, b"abc", total=10).status_code == 200
        assert _chunk(srv, "b" * 20, 0, b"abc", total=10).status_code == 200
        # "a" sat idle for longer than the limit: the next chunk (of any upload) drops it.
        from rf.services.uploads import UPLOAD_IDLE_S

        old = time.time() - UPLOAD_IDLE_S - 60
        [a_part] = _uploads_dir(ws).glob("a*")
        os.utime(a_part, (old, old))
        assert _chunk(srv, "b" * 20, 3, b"def", total=10).status_code == 200
        assert _staged(ws) == ["b" * 20 + ".10.part"]
        r = _chunk(srv, "a" * 20, 3, b"def", total=10)
        assert r.status_code == 404 and "idle for more than 15 minutes" in r.json()["error"]["hint"], r.text
    finally:
        srv.stop()
    assert _staged(ws) == ["b" * 20 + ".10.part"]  # (a stopped server leaves it; the next start drops it)
    srv = start_server(ws.root)
    try:
        assert _staged(ws) == []
        assert _chunk(srv, "b" * 20, 6, b"ghij", total=10).status_code == 404
    finally:
        srv.stop()


def test_max_upload_bytes_bounds_all_uploads_in_progress_together(ws: Any) -> None:
    toml = Path(ws.root) / "rf.toml"
    toml.write_text(toml.read_text().replace("[server]\n", "[server]\nmax_upload_bytes = 1000\n", 1))
    srv = start_server(ws.root)
    try:
        assert _chunk(srv, "a" * 20, 0, b"x" * 10, total=600).status_code == 200
        # Alone it fits, with the first it does not: 429, retry later.
        r = _chunk(srv, "b" * 20, 0, b"x" * 10, total=600)
        assert r.status_code == 429 and r.headers["retry-after"] == "5", r.text
        assert "uploads in progress hold" in r.json()["error"]["message"]
        # Alone over the limit: 413.
        r = _chunk(srv, "c" * 20, 0, b"x" * 10, total=1001)
        assert r.status_code == 413 and "over the limit of" in r.json()["error"]["message"], r.text
        # A deploy larger than the limit fails with the same clear message through the CLI.
        r = run_rf_here("agents", "deploy", "hello", cwd=ws.root)
        assert r.returncode == 0, r.stderr  # (small: sent inline, no upload needed)
        (Path(ws.root) / "agents" / "hello" / "data.bin").write_bytes(os.urandom(600_000))
        r = run_rf("agents", "deploy", "hello", cwd=ws.root)
        assert r.returncode != 0 and "over the limit of" in r.stderr and "max_upload_bytes" in r.stderr, r.stderr
    finally:
        srv.stop()
    bad = toml.read_text().replace("max_upload_bytes = 1000", 'max_upload_bytes = "lots"')
    toml.write_text(bad)
    srv = start_server(ws.root)
    try:
        r = _chunk(srv, "d" * 20, 0, b"x", total=1)
        assert r.status_code == 400 and "max_upload_bytes must be a positive" in r.json()["error"]["message"], r.text
    finally:
        srv.stop()
