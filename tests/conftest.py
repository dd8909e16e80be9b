"""Shared fixtures. Every test gets its own workspace in tmp_path; nothing
reads the developer's own environment (RF_* variables are cleared)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RF = [str(BIN / "rf")] if (BIN / "rf").exists() else [sys.executable, "-m", "rf"]

HELLO_TOML = 'description = "Says hello"\nentrypoint = "agent:handle"\ntimeout_s = 10\n'
HELLO_PY = (
    "def handle(input, ctx):\n"
    "    name = (input or {}).get('name', 'world') if isinstance(input, dict) else 'world'\n"
    "    return {'message': f'hello, {name}', 'env': ctx.env}\n"
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for key in list(os.environ):
        if key.startswith("RF_"):
            monkeypatch.delenv(key, raising=False)
    # Secrets (credentials, webhook secrets) of tests never reach the developer's
    # own keyring file; subprocesses inherit this too.
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("xdg-data")))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "160")


def write_agent(ws_root: Path, name: str, code: str = HELLO_PY, toml: str = HELLO_TOML,
                extra: dict[str, str] | None = None) -> Path:
    d = ws_root / "agents" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "agent.toml").write_text(toml)
    (d / "agent.py").write_text(code)
    for rel, text in (extra or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


@pytest.fixture
def ws(tmp_path: Path) -> Any:
    """A fresh workspace with a `hello` agent in agents/."""
    from rf.config import init_workspace

    workspace = init_workspace(tmp_path / "ws")
    write_agent(workspace.root, "hello")
    return workspace


def run_rf(*args: str, cwd: Path, input: str | None = None, env: dict[str, str] | None = None,
           timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the real `rf` command in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    full_env.update({"NO_COLOR": "1", "COLUMNS": "160"})
    full_env.update(env or {})
    return subprocess.run([*RF, *args], cwd=cwd, text=True, capture_output=True,
                          input=input if input is not None else "", env=full_env, timeout=timeout)


class ServerProc:
    def __init__(self, proc: subprocess.Popen[str], info: dict[str, Any]) -> None:
        self.proc = proc
        self.url: str = info["url"]
        self.token: str = info["token"]
        self.pid: int = info["pid"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(root: Path, timeout: float = 30, *, extra_env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> ServerProc:
    """`rf serve --port 0 [ARGS]` as a real subprocess (with ``extra_env``, ``RF_*`` included);
    waits for .rf/server.json and /api/health."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    env.update(extra_env or {})
    proc = subprocess.Popen([*RF, "serve", "--port", "0", *args], cwd=root, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    info_file = root / ".rf" / "server.json"
    deadline = time.monotonic() + timeout
    while True:
        if info_file.exists():
            try:
                info = json.loads(info_file.read_text())
                break
            except ValueError:
                pass
        if proc.poll() is not None:
            raise RuntimeError("rf serve exited: " + (proc.stdout.read() if proc.stdout else ""))
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("rf serve did not start in time")
        time.sleep(0.05)
    # server.json is written just before uvicorn starts accepting; wait for health.
    import httpx

    while time.monotonic() < deadline:
        try:
            if httpx.get(info["url"] + "/api/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    return ServerProc(proc, info)


@pytest.fixture
def server(ws: Any) -> Iterator[ServerProc]:
    s = start_server(ws.root)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def pg_databases() -> Iterator[Any]:
    """One real PostgreSQL server per test session (per xdist worker), started on first use;
    ``.new()`` makes a migrated database for a test or module (tests/pgserver.py)."""
    from pgserver import PgDatabases, postgres_server

    with postgres_server() as server:
        yield PgDatabases(server)


def use_store(root: Path, kind: str, pg_databases: Any | None) -> None:
    """Point the workspace at *root* to its store: ``duckdb`` (the default file) or ``postgresql``
    (a fresh database of the test session's server, in rf.toml's ``[store]``)."""
    if kind == "duckdb":
        return
    assert pg_databases is not None
    toml = root / "rf.toml"
    toml.write_text(toml.read_text() + pg_databases.toml(pg_databases.new()))
