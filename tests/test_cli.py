"""The `rf` command as a user runs it: real subprocesses, real workspaces. Where a test runs
many commands, some run through the same entry point in this process (run_rf_here: the same
output and exit codes, tests/test_cli.py::test_run_rf_here_answers_as_the_real_command)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from conftest import HELLO_TOML, RF, run_rf, run_rf_here, write_agent


def test_init_example_hello_and_test(tmp_path: Path) -> None:
    r = run_rf("init", "proj", "--example", "hello", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    root = tmp_path / "proj"
    assert (root / "rf.toml").is_file() and (root / ".rf").is_dir()
    assert ".rf/" in (root / ".gitignore").read_text()
    assert (root / "agents" / "hello" / "agent.toml").is_file()
    r = run_rf("test", "hello", "--input", '{"name": "Ada"}', "--json", cwd=root / "agents")  # walks up
    assert r.returncode == 0, r.stderr
    ex = json.loads(r.stdout)
    assert ex["output"] == {"message": "hello, Ada"}
    assert ex["env"] == "staging" and ex["source"] == "test" and ex["commit"] == "working-copy"
    assert "greeting Ada in staging" in ex["logs"]


def test_init_refuses_existing_and_unknown_example(tmp_path: Path) -> None:
    assert run_rf("init", "a", cwd=tmp_path).returncode == 0
    r = run_rf("init", "a", cwd=tmp_path)
    assert r.returncode == 1 and "already an rf workspace" in r.stderr
    r = run_rf("init", "b", "--example", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "unknown example" in r.stderr and "hello" in r.stderr
    assert not (tmp_path / "b").exists()


def test_no_workspace_is_a_clear_error(tmp_path: Path) -> None:
    r = run_rf("agents", "list", cwd=tmp_path)
    assert r.returncode == 1
    assert "no rf workspace found" in r.stderr and "rf init" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_rf("--workspace", str(tmp_path / "missing"), "status", cwd=tmp_path)
    assert r.returncode == 1 and "does not exist" in r.stderr


def test_test_command_inputs_and_exit_codes(ws: Any) -> None:
    root = ws.root
    r = run_rf("test", "hello", "--json", cwd=root, input='{"name": "piped"}')
    assert json.loads(r.stdout)["output"]["message"] == "hello, piped"
    f = root / "in.json"
    f.write_text('{"name": "file"}')
    r = run_rf("test", "hello", "--input-file", str(f), cwd=root)
    assert r.returncode == 0 and '"hello, file"' in r.stdout and "succeeded" in r.stderr
    r = run_rf("test", "hello", "--input", "{oops", cwd=root)
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    # The input as an argument, after the agent, or alone inside the agent's directory.
    r = run_rf_here("test", "hello", '{"name": "positional"}', "--json", cwd=root)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"]["message"] == "hello, positional"
    r = run_rf_here("test", '{"name": "here"}', "--json", cwd=root / "agents" / "hello")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["output"]["message"] == "hello, here"
    r = run_rf_here("test", "hello", '{"name": "a"}', "--input", '{"name": "b"}', cwd=root)
    assert r.returncode == 2 and "given twice" in r.stderr and "Traceback" not in r.stderr
    r = run_rf_here("test", "hello", "name=x", cwd=root)
    assert r.returncode == 2 and "not valid JSON" in r.stderr
    write_agent(root, "broken", "def handle(input, ctx):\n    return 1 / 0\n")
    r = run_rf_here("test", "broken", cwd=root)
    assert r.returncode == 1 and "ZeroDivisionError" in r.stderr and "agent.py:2" in r.stderr
    r = run_rf_here("test", "ghost", cwd=root)
    assert r.returncode == 1 and "no agent directory" in r.stderr and "hello" in r.stderr
    # rf test never writes production state
    prod = json.loads(run_rf_here("executions", "list", "--env", "production", "--json", cwd=root).stdout)
    assert prod == []
    staging = json.loads(run_rf_here("executions", "list", "--json", "--limit", "50", cwd=root).stdout)
    assert {e["source"] for e in staging} == {"test"} and len(staging) == 5


def test_deploy_promote_and_inspect(ws: Any) -> None:
    root = ws.root
    st = run_rf("status", cwd=root, env={"COLUMNS": "100"}).stdout  # an agent in agents/, never deployed
    assert "not deployed yet: rf agents deploy hello" in st and "none" not in st, st
    r = run_rf("agents", "deploy", "hello", "-m", "first", cwd=root)
    assert r.returncode == 0 and "deployed hello to staging" in r.stderr
    r = run_rf_here("agents", "deploy", "hello", cwd=root)
    assert r.returncode == 0 and "no changes" in r.stderr
    r = run_rf_here("agents", "deploy", cwd=root / "agents" / "hello")  # agent inferred from cwd
    assert "no changes" in r.stderr
    # promote needs confirmation when nobody can answer
    r = run_rf("agents", "promote", "hello", cwd=root)
    assert r.returncode == 2 and "--yes" in r.stderr
    agents = json.loads(run_rf_here("agents", "list", "--json", cwd=root).stdout)
    assert agents[0]["production_commit"] is None
    # A long description gives way on a narrow terminal: one line per agent, its state on it.
    toml = root / "agents" / "hello" / "agent.toml"
    toml.write_text(toml.read_text().replace('description = "', 'description = "' + "a rather long story " * 5))
    assert run_rf_here("agents", "deploy", "hello", cwd=root).returncode == 0
    listed = run_rf_here("agents", "list", cwd=root, env={"COLUMNS": "80"}).stdout.splitlines()
    assert len(listed) == 2 and listed[1].startswith("hello") and listed[1].endswith("not promoted yet"), listed
    assert "…" in listed[1] and max(len(line) for line in listed) <= 80
    r = run_rf_here("agents", "promote", "hello", "--yes", cwd=root)
    assert r.returncode == 0 and "promoted hello to production" in r.stderr
    (root / "agents" / "hello" / "agent.py").write_text("def handle(input, ctx):\n    return 'v2'\n")
    assert run_rf_here("agents", "deploy", "hello", "-m", "second", cwd=root).returncode == 0
    show = json.loads(run_rf_here("agents", "show", "hello", "--json", cwd=root).stdout)
    assert show["commits_ahead"] == 1
    assert show["endpoints"]["production"].endswith("/production/agents/hello")
    hist = run_rf_here("agents", "history", "hello", cwd=root).stdout
    assert "second" in hist and "first" in hist and "staging" in hist and "production" in hist
    d = run_rf_here("agents", "diff", "hello", cwd=root).stdout
    assert "+    return 'v2'" in d and "1 commit" in d
    st = run_rf_here("status", cwd=root).stdout
    assert "hello" in st and "1 commit ahead" in st and "not running" in st
    r = run_rf("invoke", "hello", '{"name": "P"}', "--env", "production", "--json", cwd=root)
    assert json.loads(r.stdout)["output"] == {"message": "hello, P", "env": "production"}
    r = run_rf_here("invoke", "hello", "--env", "staging", cwd=root)
    assert r.stdout.strip() == "v2"
    ex_id = json.loads(run_rf_here("executions", "list", "--env", "production", "--json", cwd=root).stdout)[0]["id"]
    shown = run_rf("executions", "show", ex_id, cwd=root)
    assert shown.returncode == 0 and "hello, P" in shown.stdout
    # `rf invoke` without a server starts its worker: the duration line says so; and where the trace is.
    assert "before it: a cold start" in shown.stdout and f"rf traces show {ex_id}" in shown.stdout
    r = run_rf_here("executions", "show", ex_id, "--env", "staging", cwd=root)
    assert r.returncode == 1 and "no execution" in r.stderr


def test_bad_agent_definitions_change_nothing(ws: Any) -> None:
    root = ws.root
    (root / "agents" / "notoml").mkdir()
    (root / "agents" / "notoml" / "agent.py").write_text("def handle(i, c):\n    return 1\n")
    cases = {
        "notoml": "has no agent.toml",
        "badtoml": "not valid TOML",
        "badentry": "has no function 'nope'",
        "syntax": "agent.py:2",
    }
    write_agent(root, "badtoml", toml="entrypoint = \n")
    write_agent(root, "badentry", toml='entrypoint = "agent:nope"\n')
    write_agent(root, "syntax", code="def handle(input, ctx):\n    return (\n")
    for name, expected in cases.items():
        r = (run_rf if name == "notoml" else run_rf_here)("agents", "deploy", name, cwd=root)
        assert r.returncode == 1, name
        assert expected in r.stderr, (name, r.stderr)
        assert "Traceback" not in r.stderr
    assert json.loads(run_rf_here("agents", "list", "--json", cwd=root).stdout) == []


def test_env_is_validated_everywhere(ws: Any) -> None:
    r = run_rf("executions", "list", "--env", "prod", cwd=ws.root)
    assert r.returncode == 2 and "unknown environment 'prod'" in r.stderr
    r = run_rf("invoke", "hello", "--env", "qa", cwd=ws.root)
    assert r.returncode == 2
    r = run_rf("invoke", "hello", "--env", "production", cwd=ws.root)
    assert r.returncode == 1 and "unknown agent" in r.stderr


def test_rfignore_and_default_ignores(ws: Any) -> None:
    root = ws.root
    d = root / "agents" / "hello"
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "x.pyc").write_bytes(b"\0")
    (d / "data").mkdir()
    (d / "data" / "big.csv").write_text("a,b\n")
    (d / "notes.txt").write_text("keep me")
    (d / ".rfignore").write_text("data/\n# comment\n")
    r = run_rf("agents", "deploy", "hello", "--json", cwd=root)
    tree = json.loads(r.stdout)["commit"]["tree"]
    assert set(tree) == {"agent.toml", "agent.py", "notes.txt", ".rfignore"}


def test_two_commands_at_once_without_server(ws: Any) -> None:
    """A second command waits briefly, then names the fix; no raw DuckDB error."""
    db = ws.root / ".rf" / "rf.duckdb"
    assert run_rf("agents", "list", cwd=ws.root).returncode == 0  # creates the file
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import duckdb, time
            con = duckdb.connect({str(db)!r})
            print("locked", flush=True)
            time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        r = run_rf("agents", "list", cwd=ws.root, env={"RF_LOCK_WAIT_S": "0.5"})
        assert r.returncode == 1
        assert "in use by another process" in r.stderr and "rf serve" in r.stderr
        assert "IOException" not in r.stderr and "Traceback" not in r.stderr
    finally:
        holder.kill()
        holder.wait()
    # and once the other process is gone, it works again
    assert run_rf("agents", "list", cwd=ws.root).returncode == 0


def test_short_lived_commands_wait_for_each_other(ws: Any) -> None:
    """Two real rf commands started together both succeed (the second waits)."""
    from conftest import RF

    procs = [
        subprocess.Popen([*RF, "agents", "deploy", "hello"], cwd=ws.root, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ] + [subprocess.Popen([*RF, "executions", "list"], cwd=ws.root, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)]
    results = [(p.wait(timeout=60), p.stderr.read() if p.stderr else "") for p in procs]
    assert all(code == 0 for code, _ in results), results
    hist = json.loads(run_rf("agents", "history", "hello", "--json", cwd=ws.root).stdout)
    assert len(hist) == 1


def test_help_and_version(tmp_path: Path) -> None:
    r = run_rf("--version", cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("rf ")
    r = run_rf("--help", cwd=tmp_path)
    for group in ("agents", "executions", "init", "status", "serve", "test", "invoke"):
        assert group in r.stdout
    r = run_rf("agents", "frobnicate", cwd=tmp_path)
    assert r.returncode == 2


@pytest.mark.parametrize("args", [("--help",), (), ("agents", "--help"), ("releases", "publish", "-h"),
                                  ("-w", ".", "-h")])
def test_the_light_help_path_prints_the_same_help(tmp_path: Path, args: tuple[str, ...]) -> None:
    """`rf --help` lists each group from rf.cli.app.GROUPS without importing it, and help skips
    two Rich modules it does not use: the output is exactly the full path's."""
    light = run_rf(*args, cwd=tmp_path)
    full = run_rf(*args, cwd=tmp_path, env={"RF_FULL_HELP": "1"})
    assert light.stdout == full.stdout and light.returncode == full.returncode
    assert "Usage: rf" in light.stdout


def test_importing_the_cli_in_process_registers_every_group(tmp_path: Path) -> None:
    """Only `rf --help` itself lists stand-ins: a process that imports rf.cli.app to run
    commands (tests, tools) gets every group, whatever its own argv looks like."""
    code = ("import sys; sys.argv = ['pytest']; import rf.cli.app as a; "
            "print(sorted(g.name for g in a.app.registered_groups))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    from rf.cli.app import GROUPS

    assert out.strip() == str(sorted(name for name, _, _ in GROUPS))
    code = ("import sys; sys.argv = ['pytest']; import rf.cli.app as a; "
            "print(all(g.typer_instance.registered_commands or g.typer_instance.registered_groups "
            "for g in a.app.registered_groups))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "True"


def test_each_groups_help_line_is_its_modules_own() -> None:
    import importlib

    from rf.cli.app import GROUPS

    for name, _, help_text in GROUPS:
        own = importlib.import_module(f"rf.cli.{name}").app.info.help
        assert not isinstance(own, str) or own == help_text, name


def test_toml_timeout_is_enforced(ws: Any) -> None:
    write_agent(ws.root, "slow", "import time\ndef handle(input, ctx):\n    time.sleep(30)\n",
                HELLO_TOML.replace("timeout_s = 10", "timeout_s = 0.5"))
    r = run_rf("test", "slow", cwd=ws.root)
    assert r.returncode == 1 and "timed out" in r.stderr


def test_watch_reruns_on_change(ws: Any) -> None:
    import os
    import time

    from conftest import RF

    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    proc = subprocess.Popen([*RF, "test", "hello", "--watch", "--input", '{"name": "W"}'], cwd=ws.root,
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 40
        changed = False
        for line in proc.stdout:
            seen.append(line)
            if "watching" in line and not changed:
                time.sleep(0.3)
                (ws.root / "agents" / "hello" / "agent.py").write_text(
                    "def handle(input, ctx):\n    return {'message': 'changed ' + input['name']}\n")
                changed = True
            if "changed W" in line or time.monotonic() > deadline:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    text = "".join(seen)
    assert "hello, W" in text and "re-running" in text and "changed W" in text


WAITS_FOR_MARKER = '''
import json, os, time


def handle(input, ctx):
    yield {"n": 1}
    deadline = time.monotonic() + 20
    while not os.path.exists(input["marker"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    yield {"n": 2, "waited": os.path.exists(input["marker"])}
    yield "text "
    yield "runs together"
'''


@pytest.mark.parametrize("through_server", [False, True])
def test_rf_test_prints_chunks_as_they_come(ws: Any, through_server: bool) -> None:
    """`rf test` of a generator agent prints each chunk when the agent yields it (in-process,
    and through a running server, which answers server-sent events): the agent waits for the
    test to have read its first chunk before it yields the next."""
    from conftest import start_server

    write_agent(ws.root, "gen", WAITS_FOR_MARKER)
    marker = ws.root / "seen-first-chunk"
    server = start_server(ws.root) if through_server else None
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
        env.update({"NO_COLOR": "1", "COLUMNS": "160"})
        proc = subprocess.Popen([*RF, "test", "gen", json.dumps({"marker": str(marker)})], cwd=ws.root, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert json.loads(first) == {"n": 1}
        marker.touch()
        rest, errors = proc.communicate(timeout=60)
        assert proc.returncode == 0, errors
        assert rest.splitlines() == ['{"n": 2, "waited": true}', "text runs together"]
        assert "succeeded" in errors and "Traceback" not in errors
        # --json prints the execution once, at the end (no chunk lines before it).
        marker.unlink()
        marker.touch()
        r = run_rf_here("test", "gen", json.dumps({"marker": str(marker)}), "--json", cwd=ws.root)
        assert json.loads(r.stdout)["output"] == [{"n": 1}, {"n": 2, "waited": True}, "text ", "runs together"]
        if server is not None:
            st = json.loads(run_rf_here("status", "--json", cwd=ws.root).stdout)
            assert st["backend"] == "http"
    finally:
        if server is not None:
            server.stop()


def test_list_tables_fit_a_narrow_terminal() -> None:
    """fit_table: on a narrow terminal the cuttable columns give way first (to 24, then 8
    characters), optional columns are left out in between, last-resort ones after; the
    other columns keep their content's width (Rich alone squeezes or drops any column)."""
    import io

    from rich.console import Console
    from rich.table import Table

    from rf.cli.output import fit_table

    def render(width: int, **kwargs: Any) -> list[str]:
        table = Table(box=None, pad_edge=False)
        for header in ("id", "status", "source", "started"):
            table.add_column(header)
        table.add_column("error", max_width=40, no_wrap=True, overflow="ellipsis")
        table.add_row("ex_0123456789abcdefghij", "succeeded", "endpoint", "2026-11-26 13:30:12",
                      "ValueError: " + "x" * 60)
        console = Console(file=io.StringIO(), width=width, color_system=None)
        console.print(fit_table(table, console, **kwargs))
        return console.file.getvalue().splitlines()  # type: ignore[attr-defined]

    wide = render(120)
    assert wide[0].split() == ["id", "status", "source", "started", "error"] and wide[1].endswith("xxx…")
    assert len(wide[1]) == 23 + 2 + 9 + 2 + 8 + 2 + 19 + 2 + 40
    at_91 = render(91, optional=("source",), last_resort=("started",))
    assert at_91[0].split() == ["id", "status", "source", "started", "error"]  # the error gives way first
    assert at_91[1].endswith("ValueError: xxxxxxxxxxx…") and len(at_91[1]) == 91
    at_80 = render(80, optional=("source",), last_resort=("started",))
    assert at_80[0].split() == ["id", "status", "started", "error"]  # then the optional column goes
    assert "ex_0123456789abcdefghij  succeeded  2026-11-26 13:30:12  ValueError" in at_80[1]
    assert max(map(len, at_80)) <= 80
    for width in (64, 50):
        narrow = render(width, optional=("source",), last_resort=("started",))
        assert narrow[0].split() == ["id", "status", "error"]  # the last resort goes last
        assert narrow[1].startswith("ex_0123456789abcdefghij  succeeded  ValueError")
        assert max(map(len, narrow)) <= width
    # Without optional columns, Rich would squeeze the id; fit_table cuts the error instead.
    squeezed = render(76)
    assert "ex_0123456789abcdefghij" in squeezed[1] and max(map(len, squeezed)) <= 76


def test_list_commands_keep_ids_whole_at_80_columns(ws: Any) -> None:
    root = ws.root
    write_agent(root, "broken", "def handle(input, ctx):\n    raise ValueError('x' * 90)\n")
    r = run_rf("test", "broken", cwd=root)
    assert r.returncode == 1
    r = run_rf_here("test", "hello", '{"name": "a fairly long name for the session list"}', "--session", "s-1",
                    cwd=root)
    assert r.returncode == 0, r.stderr
    ids = [e["id"] for e in json.loads(run_rf_here("executions", "list", "--json", cwd=root).stdout)]
    for columns in ("80", "60"):
        for args in (["executions", "list"], ["traces", "list"], ["sessions", "list"]):
            run = run_rf if (columns, args[0]) == ("80", "executions") else run_rf_here
            lines = run(*args, cwd=root, env={"COLUMNS": columns}).stdout.splitlines()
            assert max(map(len, lines)) <= int(columns), (args, lines)
            if args[0] != "sessions":
                assert all(any(i in ln for ln in lines) for i in ids), (args, lines)
            else:
                assert any(ln.startswith("s-1 ") and "hello" in ln for ln in lines), lines


def test_run_rf_here_answers_as_the_real_command(tmp_path: Path) -> None:
    """conftest.run_rf_here (rf.cli.main in the test's process) prints and exits as the real `rf`
    in a new process: the same commands in two like workspaces, one each way, give the same exit
    codes, stdout and stderr (ids, commits and times aside) — successes, piped stdin, a refused
    confirmation, rf's own errors, click's usage errors, a narrower COLUMNS — and the call leaves
    this process as it found it (cwd, environment, umask, argv)."""
    import re

    from conftest import run_rf_here
    from rf.config import init_workspace

    def masked(text: str, root: Path) -> str:
        text = text.replace(str(root), "ROOT")
        text = re.sub(r"\b(ex|rel|tr|se|ses)_[0-9a-z]{6,}", r"\1_ID", text)
        text = re.sub(r"\b[0-9a-f]{8,40}\b", "COMMIT", text)
        text = re.sub(r"\d{4}-\d\d-\d\d[T ][\d:.+Z-]+", "TIME", text)
        text = re.sub(r"\d+(\.\d+)? ?(ms|s)\b", "N ms", text)
        text = re.sub(r'("\w+_ms": )[\d.]+', r"\1N", text)
        return re.sub(r"\b\d+[smhd] ago\b", "N ago", text)

    steps: list[tuple[tuple[str, ...], str | None, dict[str, str] | None]] = [
        (("agents", "deploy", "hello", "-m", "first"), None, None),
        (("test", "hello", '{"name": "Ada"}'), None, None),
        (("test", "hello", "--json"), '{"name": "piped"}', None),
        (("agents", "promote", "hello"), None, None),  # no terminal: needs --yes
        (("agents", "promote", "hello", "--yes"), None, None),
        (("agents", "list"), None, {"COLUMNS": "60"}),
        (("test", "ghost"), None, None),
        (("agents", "frobnicate"), None, None),
        (("test", "hello", "--input", "{oops"), None, None),
    ]
    roots = [init_workspace(tmp_path / way / "ws").root for way in ("process", "here")]
    for root in roots:
        write_agent(root, "hello")
    before = (os.getcwd(), dict(os.environ), os.umask(0o022), list(sys.argv))
    os.umask(before[2])
    for args, stdin, env in steps:
        real = run_rf(*args, cwd=roots[0], input=stdin, env=env)
        here = run_rf_here(*args, cwd=roots[1], input=stdin, env=env)
        assert (real.returncode, masked(real.stdout, roots[0]), masked(real.stderr, roots[0])) == (
            here.returncode, masked(here.stdout, roots[1]), masked(here.stderr, roots[1])), args
    assert (os.getcwd(), dict(os.environ), os.umask(0o022), list(sys.argv)) == before
    os.umask(before[2])
