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


def pytest_configure(config: pytest.Config) -> None:
    """Where Python writes no bytecode (``PYTHONDONTWRITEBYTECODE``, as this machine's image
    sets it), every process the suite starts (each `rf` command, `rf serve`, agent workers)
    would compile rf's modules from source again, ~0.2 s a process. They are compiled once
    here, before the tests (by the controller, not by each xdist worker), into the
    ``__pycache__`` Python itself writes elsewhere (ignored by git); Python reads bytecode it
    finds whatever that setting: the same code, loaded faster."""
    if sys.dont_write_bytecode and not hasattr(config, "workerinput"):
        import compileall

        import rf

        compileall.compile_dir(Path(rf.__file__).parent, quiet=2)


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


#: What run_rf_here cannot stand in for: commands that outlive the call (a server, the dashboard,
#: the MCP server) and help (``rf --help`` puts stand-ins for two rich modules in sys.modules).
_NOT_HERE = {"serve", "ui", "mcp"}


def run_rf_here(*args: str, cwd: Path, input: str | None = None, env: dict[str, str] | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`rf ARGS` through the console script's own entry point (``rf.cli.main``, what
    ``[project.scripts] rf`` runs) in this process, as :func:`run_rf` runs it in a new one:
    in *cwd*, with *input* on a non-TTY stdin, the environment without ``RF_*`` plus
    ``NO_COLOR=1``, ``COLUMNS=160`` and *env*, stdout and stderr apart, the exit code of its
    ``SystemExit`` (1 and the traceback for an uncaught exception, as Python's). Everything it
    changes (cwd, environment, argv, std streams, umask, the consoles' width) is put back.

    It spares starting an interpreter and importing rf (~0.5 s a call): tests keep :func:`run_rf`
    where the process itself matters (a real entry point per test, signals, what a child inherits)."""
    import io
    import traceback
    import types

    del timeout  # the same signature as run_rf; an in-process call cannot be cut short
    command = list(args)
    while command[:1] in (["-w"], ["--workspace"]):
        del command[:2]
    assert command and command[0] not in _NOT_HERE and not {"-h", "--help"} & set(args), (
        f"run_rf_here cannot run `rf {' '.join(args)}`: use run_rf")
    saved_env = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_argv = sys.argv
    saved_main = sys.modules["__main__"]
    saved_streams = sys.stdin, sys.stdout, sys.stderr
    saved_umask = os.umask(0o022)
    os.umask(saved_umask)
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    stderr = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    consoles: list[Any] = []
    try:
        for key in [k for k in os.environ if k.startswith("RF_")]:
            del os.environ[key]
        os.environ.update({"NO_COLOR": "1", "COLUMNS": "160", **(env or {})})
        os.chdir(cwd)
        # what the console script's process has: its script as argv[0] and as __main__ (click
        # names the program in usage lines from them: `rf`, not `python -m pytest`)
        sys.argv = [str(BIN / "rf")]
        if "rf.cli.app" not in sys.modules:  # registers the groups the command line names: all, here
            import rf.cli.app  # noqa: F401
        sys.argv = [str(BIN / "rf"), *args]
        sys.modules["__main__"] = types.ModuleType("__main__")
        sys.stdin = io.TextIOWrapper(io.BytesIO((input or "").encode()), encoding="utf-8")
        sys.stdout, sys.stderr = stdout, stderr
        # rf's two consoles read COLUMNS and NO_COLOR once, when rf.cli.output is imported: as a
        # new process would, they get this call's (and no colours: their files are not terminals).
        from rf.cli.output import err as err_console
        from rf.cli.output import out as out_console

        for console in (out_console, err_console):
            consoles.append((console, console._width, console.no_color, console._color_system))
            console.width = int(os.environ["COLUMNS"])
            console.no_color = bool(os.environ.get("NO_COLOR"))
            console._color_system = None
        from rf.cli import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                stderr.write(f"{exc.code}\n")
                code = 1
        except Exception:
            stderr.write(traceback.format_exc())
            code = 1
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved_streams
        sys.argv = saved_argv
        sys.modules["__main__"] = saved_main
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        os.umask(saved_umask)
        for console, width, no_color, color_system in consoles:
            console._width, console.no_color, console._color_system = width, no_color, color_system
    texts = [stream.buffer.getvalue().decode("utf-8", "replace")  # type: ignore[attr-defined]
             .replace("\r\n", "\n") for stream in (stdout, stderr)]
    return subprocess.CompletedProcess([*RF, *args], code, texts[0], texts[1])


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
