"""Agent code gets neither rf's secrets nor a way to change what production runs.

Through real parts: ``rf serve`` subprocesses, real workers, the real CLI.

- A worker (and the deploy-time check, which imports the agent too) gets an allow-listed
  environment plus what the commit's ``[env]`` names: never ``RF_*``, never the token; it
  runs in an empty directory of its own, outside the workspace.
- Commit directories (and ``rf test``'s working copies) are read-only, and each new worker
  checks its commit's files first: a changed file is put back from the store, with a warning.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent

SECRET = "s3cret-value-of-a-credential"

SPY_TOML = """\
description = "Reports what agent code can see"
entrypoint = "agent:handle"
timeout_s = 20

[env]
pass = ["MY_PASSED", "MY_UNSET"]
MY_LITERAL = "literal value"
"""

# Module-level code runs in the deploy check and in each worker: it refuses to import when
# rf's variables reached it, when [env] did not, or when it does not start in an empty
# directory of its own (before the change the check ran in the code directory).
SPY_PY = """\
import os
from pathlib import Path

_leaked = sorted(k for k in os.environ if k.upper().startswith("RF_"))
if _leaked:
    raise RuntimeError("rf's variables reached the agent's import: " + ", ".join(_leaked))
if os.environ.get("MY_LITERAL") != "literal value":
    raise RuntimeError("[env] MY_LITERAL did not reach the agent's import")
if os.path.realpath(os.getcwd()) == os.path.realpath(os.path.dirname(__file__)) or os.listdir("."):
    raise RuntimeError("the agent's import did not start in an empty directory: " + os.getcwd())


def handle(input, ctx):
    found = {}
    for rel in (".rf/server.json", "server.json", "../server.json", "../../server.json", "../../../server.json",
                "../../../../.rf/server.json", "rf.toml", "../../../../rf.toml", "agent.py"):
        try:
            with open(rel) as f:
                found[rel] = f.read()
        except OSError:
            found[rel] = None
    return {
        "env": dict(os.environ),
        "cwd": os.getcwd(),
        "cwd_files": os.listdir("."),
        "found": found,
        "own_file": (Path(__file__).parent / "data.txt").read_text(),
    }
"""


def _start_server_with(root: Path, extra_env: dict[str, str], timeout: float = 30) -> ServerProc:
    """:func:`conftest.start_server`, but with variables rf must keep to itself (``RF_*``)."""
    return start_server(root, timeout, extra_env=extra_env)


def _stop(server: ServerProc) -> str:
    """Stop the server; everything it printed (stdout and stderr)."""
    server.stop()
    assert server.proc.stdout is not None
    return server.proc.stdout.read()


def _deploy(ws: Any, name: str, *, promote: bool = False) -> None:
    """In-process (run_rf_here, the console script's entry point, RF_* left out as for `rf`)."""
    r = run_rf_here("agents", "deploy", name, "-m", f"deploy {name}", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    if promote:
        r = run_rf_here("agents", "promote", name, "--yes", cwd=ws.root)
        assert r.returncode == 0, r.stderr


def _under(path: str, root: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(root.resolve())


# ---------------------------------------------------------------- (a) environment and cwd


def test_worker_gets_allow_listed_env_and_an_empty_cwd_outside_the_workspace(ws: Any) -> None:
    write_agent(ws.root, "spy", SPY_PY, SPY_TOML, extra={"data.txt": "own data"})
    server = _start_server_with(ws.root, {
        "RF_SECRET_DEMO": SECRET,  # a credential override: rf's, never the agent's
        "RF_LOCK_WAIT_S": "3",
        "MY_PASSED": "passed value",
        "NOT_NAMED": "rf's business",
        "HTTPS_PROXY": "http://proxy.invalid:3128",
    })
    try:
        _deploy(ws, "spy")  # the deploy check imports the module: it refuses to if RF_* reach it
        r = httpx.post(f"{server.url}/staging/agents/spy", json={"input": {}}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["status"] == "succeeded", body
        out = body["output"]

        env = out["env"]
        assert not [k for k in env if k.upper().startswith("RF_")]
        assert server.token not in r.text and SECRET not in r.text
        assert env["MY_PASSED"] == "passed value"  # [env] pass: copied from rf's environment
        assert "MY_UNSET" not in env  # ... when set there
        assert env["MY_LITERAL"] == "literal value"  # [env] NAME = "...": as given
        assert "NOT_NAMED" not in env  # anything else stays in rf
        assert env["HTTPS_PROXY"] == "http://proxy.invalid:3128"  # the allow-list
        assert "PATH" in env and env.get("PYTHONDONTWRITEBYTECODE") == "1"

        assert not _under(out["cwd"], ws.root), out["cwd"]
        assert out["cwd_files"] == []
        assert out["found"] == dict.fromkeys(out["found"])  # no relative path reaches a file
        assert out["own_file"] == "own data"  # Path(__file__).parent does

        # rf test (the working copy, through the server) runs the same way.
        r2 = run_rf("test", "spy", "{}", "--json", cwd=ws.root)
        assert r2.returncode == 0, r2.stderr
        assert server.token not in r2.stdout and SECRET not in r2.stdout
        tested = json.loads(r2.stdout)["output"]
        assert not [k for k in tested["env"] if k.upper().startswith("RF_")]
        assert tested["env"]["MY_LITERAL"] == "literal value" and "NOT_NAMED" not in tested["env"]
        assert not _under(tested["cwd"], ws.root) and tested["cwd_files"] == []
        assert tested["found"] == dict.fromkeys(tested["found"])
    finally:
        _stop(server)


def test_env_table_refuses_rf_variables_at_deploy(ws: Any) -> None:
    for name, table in [
        ("literal", 'RF_X = "1"'),
        ("passed", 'pass = ["RF_SECRET_DEMO"]'),
        ("lower", 'rf_token = "x"'),
    ]:
        write_agent(ws.root, f"bad-{name}", toml=f'entrypoint = "agent:handle"\n\n[env]\n{table}\n')
        r = (run_rf if name == "literal" else run_rf_here)("agents", "deploy", f"bad-{name}", cwd=ws.root)
        assert r.returncode == 1, r.stdout
        assert "never reach agent code" in r.stderr and "[env]" in r.stderr, r.stderr
    listed = run_rf_here("agents", "list", "--json", cwd=ws.root)
    assert not [a for a in json.loads(listed.stdout) if a["name"].startswith("bad-")]


@pytest.mark.parametrize(("table", "expected"), [
    ('MY_X = 3', "[env] MY_X must be a string"),
    ('pass = "MY_X"', "[env] pass must be a list of variable names"),
    ('pass = ["MY-X"]', "is not an environment variable name"),
    ('"1X" = "a"', "is not an environment variable name"),
    ('PYTHONPATH = "/tmp"', "rf sets it for the worker"),
    ('pass = ["MY_X"]\nMY_X = "a"', "both in pass and set"),
    ('MY_X = { a = "b" }', "[env] MY_X must be a string"),
])
def test_env_table_is_validated(table: str, expected: str) -> None:
    from rf.config import parse_agent_toml
    from rf.errors import InvalidAgent

    with pytest.raises(InvalidAgent) as info:
        parse_agent_toml("a", f"[env]\n{table}\n", source="agents/a/agent.toml")
    assert expected in info.value.message and "agents/a/agent.toml" in info.value.message
    with pytest.raises(InvalidAgent, match="env must be a table"):
        parse_agent_toml("a", 'env = "MY_X"\n')
    config = parse_agent_toml("a", '[env]\npass = ["A_B", "UNSET_1"]\nC = "lit"\n')
    assert config.env_values({"A_B": "from rf", "OTHER": "no"}) == {"A_B": "from rf", "C": "lit"}


def test_worker_env_is_an_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from rf.runtime.pool import RF_ROOT, worker_env

    monkeypatch.setenv("RF_SECRET_X", SECRET)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("no_proxy", "localhost")
    monkeypatch.setenv("PYTHONPATH", "/extra")
    env = worker_env({"RF_FROM_POOL": "x"}, {"MY_VAR": "v", "RF_Y": "y"})
    assert env["LC_ALL"] == "C.UTF-8" and env["no_proxy"] == "localhost" and env["MY_VAR"] == "v"
    assert "AWS_SECRET_ACCESS_KEY" not in env and not [k for k in env if k.startswith("RF_")]
    assert env["PYTHONPATH"] == RF_ROOT + os.pathsep + "/extra"


# ---------------------------------------------------------------- (b) tampering with a commit


VICTIM_PY = 'VALUE = "original"\n\n\ndef handle(input, ctx):\n    return VALUE\n'


def test_changed_commit_files_are_put_back_before_a_worker_imports_them(ws: Any) -> None:
    write_agent(ws.root, "victim", VICTIM_PY)
    server = start_server(ws.root)
    try:
        _deploy(ws, "victim", promote=True)
        url = f"{server.url}/production/agents/victim"
        assert httpx.post(url, json={"input": None}).json()["output"] == "original"
        commit = httpx.get(url).json()["commit"]
        code = ws.root / ".rf" / "cache" / "commits" / commit
        agent_py = code / "agent.py"
        good = agent_py.read_bytes()

        # Tamper with production's code on disk, stopping nothing.
        os.chmod(agent_py, 0o600)
        with agent_py.open("a") as f:
            f.write('\nVALUE = "tampered"\n')
        os.chmod(code, 0o700)
        (code / "extra.py").write_text("EXTRA = 1\n")
        # The warm worker imported the code before: it is unaffected.
        assert httpx.post(url, json={"input": None}).json()["output"] == "original"
    finally:
        _stop(server)

    server = start_server(ws.root)  # every worker is new: the next one starts from the commit dir
    try:
        r = httpx.post(f"{server.url}/production/agents/victim", json={"input": None})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["output"] == "original", body
        trace = httpx.get(f"{server.url}/api/traces/{body['execution_id']}", params={"env": "production"},
                          headers={"Authorization": f"Bearer {server.token}"}).json()
        verify = [s for s in trace["spans"] if s["name"] == "code.verify"]
        assert len(verify) == 1 and verify[0]["kind"] == "runtime" and verify[0]["status"] == "error", trace
        assert "agent.py was changed" in verify[0]["error"] and verify[0]["attributes"]["commit"] == commit
    finally:
        log = _stop(server)
    assert f"agent 'victim' commit {commit}" in log and "agent.py was changed" in log, log
    assert "extra.py is not in the commit" in log, log
    assert agent_py.read_bytes() == good
    assert not (code / "extra.py").exists()
    assert stat.S_IMODE(agent_py.stat().st_mode) == 0o400 and stat.S_IMODE(code.stat().st_mode) == 0o500


# ---------------------------------------------------------------- (c) read-only code directories


def _modes(root: Path) -> dict[str, int]:
    modes = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        modes[path.relative_to(root).as_posix()] = stat.S_IMODE(path.lstat().st_mode)
    return modes


def test_code_directories_are_read_only(ws: Any) -> None:
    write_agent(ws.root, "hello", extra={"lib/helpers.py": "X = 1\n"})
    _deploy(ws, "hello")
    r = run_rf("invoke", "hello", "{}", "--json", cwd=ws.root)  # no server: a worker in the CLI process
    assert r.returncode == 0, r.stderr
    r = run_rf("test", "hello", "{}", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    cache = ws.root / ".rf" / "cache"
    (commit_dir,) = (cache / "commits").iterdir()
    (copy_dir,) = (cache / "working-copy" / "hello").iterdir()
    for root in (commit_dir, copy_dir):
        modes = _modes(root)
        assert set(modes) == {".", "agent.toml", "agent.py", "lib", "lib/helpers.py"}, modes
        for rel, mode in modes.items():
            expected = 0o500 if (root / rel).is_dir() else 0o400
            assert mode == expected, (root, rel, oct(mode))  # no write bit, nothing for group/other

    # Modes put back by hand (content unchanged) are read-only again at the next worker start,
    # without a warning: nothing was changed.
    os.chmod(commit_dir / "agent.py", 0o644)
    os.chmod(commit_dir, 0o755)
    r = run_rf("invoke", "hello", "{}", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert "do not match" not in r.stderr
    assert _modes(commit_dir)["agent.py"] == 0o400 and _modes(commit_dir)["."] == 0o500
