"""Every diff a person reviews shows whole lines: a 300-character line at 80 columns is
wrapped, never cut without a mark (rf agents diff / promote, rf releases diff, the dashboard)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from conftest import run_rf, run_rf_here

TAIL = "END-OF-THE-LONG-LINE"
LONG = 'LONG = "' + "x" * 280 + TAIL + '"\n'


def _two_commits(ws: Any) -> None:
    assert run_rf_here("agents", "deploy", "hello", "-m", "one", cwd=ws.root).returncode == 0
    assert run_rf_here("agents", "promote", "hello", "--yes", cwd=ws.root).returncode == 0
    path = ws.root / "agents" / "hello" / "agent.py"
    path.write_text(path.read_text() + LONG)
    assert run_rf_here("agents", "deploy", "hello", "-m", "two", cwd=ws.root).returncode == 0


def _whole(text: str) -> None:
    assert TAIL in text.replace("\n", ""), text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_cli_diffs_wrap_long_lines(ws: Any) -> None:
    _two_commits(ws)
    narrow = {"COLUMNS": "80"}
    r = run_rf("agents", "diff", "hello", cwd=ws.root, env=narrow)
    assert r.returncode == 0, r.stderr
    _whole(r.stdout)
    r = run_rf_here("releases", "diff", cwd=ws.root, env=narrow)
    assert r.returncode == 0, r.stderr
    _whole(r.stdout)
    # promote shows the diff before it asks (no terminal here: it stops at the question)
    r = run_rf_here("agents", "promote", "hello", cwd=ws.root, env=narrow)
    _whole(r.stdout)


def test_dashboard_diff_folds_long_lines(ws: Any) -> None:
    from rich.console import Console

    from rf.client import open_local
    from rf.tui import render

    _two_commits(ws)
    b = open_local(ws)
    try:
        renderable = render.agent_diff(b.diff_agent("hello"), dt.datetime.now(dt.UTC).replace(tzinfo=None))
    finally:
        b.close()
    console = Console(width=80, record=True, color_system=None)
    console.print(renderable)
    _whole(console.export_text())
