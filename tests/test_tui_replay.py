"""Pilot tests of the dashboard's Replay screen (issue 18): pick an agent and a window, the
replay runs in a thread worker (the screen keeps answering and counts what is done), then the
summary and each changed execution side by side.

A real in-process store (LocalBackend) and the real runtime: the module records four production
executions of `bot` v1 (Ada, Bob, Cy, and Dee, which v1 fails) and deploys v2 to staging, which
answers Ada differently, fails Bob and fixes Dee; each test works on a copy of that workspace.
"""

from __future__ import annotations

import asyncio
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_tui import SIZE, make_app, notifications, settle
from test_tui_evals import static_text
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Select

from conftest import write_agent
from rf.client import LocalBackend, open_local
from rf.config import init_workspace, load_workspace, snapshot_dir
from rf.tui.app import RfApp
from rf.tui.views.replay import ReplayView

pytestmark = pytest.mark.anyio

V1 = '''
def handle(input, ctx):
    name = input["name"]
    if name == "Dee":
        raise RuntimeError("v1 cannot greet Dee")
    return {"message": "hello, " + name, "n": len(name)}
'''
V2 = '''
def handle(input, ctx):
    name = input["name"]
    if name == "Bob":
        raise RuntimeError("v2 breaks Bob")
    if name == "Ada":
        return {"message": "howdy, Ada", "n": 3}
    return {"message": "hello, " + name, "n": len(name)}
'''


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RF_SECRETS_FILE", str(tmp_path / "secrets.json"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = init_workspace(tmp_path_factory.mktemp("replay-tui") / "ws")
    write_agent(ws.root, "bot", V1)
    write_agent(ws.root, "fresh")
    b = open_local(ws)
    try:
        b.deploy("bot", snapshot_dir(ws.agents_dir / "bot"), "v1", "ada")
        b.promote("bot", "ada")
        for name in ("Ada", "Bob", "Cy", "Dee"):
            b.invoke("production", "bot", {"name": name})
        write_agent(ws.root, "bot", V2)
        b.deploy("bot", snapshot_dir(ws.agents_dir / "bot"), "v2", "ada")
        b.deploy("fresh", snapshot_dir(ws.agents_dir / "fresh"), "staging only", "ada")
        b.services.store.flush()
    finally:
        b.close()
    return ws.root


@pytest.fixture
def backend(template: Path, tmp_path: Path) -> Iterator[LocalBackend]:
    root = tmp_path / "ws"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("cache"))
    b = open_local(load_workspace(root))
    try:
        yield b
    finally:
        b.close()


async def until(pilot: Pilot[None], done: Callable[[], bool], timeout: float = 60.0) -> None:
    """Wait (the app running meanwhile) until ``done()``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not done():
        if loop.time() > end:
            raise AssertionError("timed out")
        await pilot.pause()
        await asyncio.sleep(0.02)


async def open_replay(app: RfApp, pilot: Pilot[None]) -> ReplayView:
    await settle(pilot)
    await pilot.click("#nav-replay")  # in the sidebar, under Observe (no number key: the ten are taken)
    await settle(pilot)
    assert app.current_view == "replay"
    return app.query_one(ReplayView)


async def test_replay_runs_in_a_worker_then_shows_each_change_side_by_side(
        backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real replay, held at a gate until the test has seen the screen answer while it runs
    # (a replay of four warm executions takes ~0.1 s: too quick to look at otherwise).
    gate = threading.Event()
    real = backend.replay

    def gated(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, "replay", gated)
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_replay(app, pilot)
        assert app.query_one("#replay-agent", Select).value == "bot"  # the agent production runs
        app.query_one("#replay-last", Input).value = "10"
        app.query_one("#replay-llm", Select).value = "mock"
        await pilot.click("#replay-run")
        await pilot.pause()
        # The replay runs in a thread: the screen answers meanwhile and says what it is doing.
        assert view.running is not None and view.result is None
        assert "replaying bot's recorded production executions on staging's state" in static_text(
            app, "#replay-status")
        assert "running…" in static_text(app, "#replay-title")
        assert "Replay" not in [b.binding.description for b in app.screen.active_bindings.values() if b.enabled]
        await pilot.press("e")  # the screen answers; switching environment keeps the replay (production → staging)
        await pilot.pause()
        assert app.env == "production" and view.running is not None
        view.progress()  # the 1-second count of what is done so far
        await until(pilot, lambda: "0 executions replayed so far" in static_text(app, "#replay-status"))
        gate.set()
        await until(pilot, lambda: view.result is not None)
        await settle(pilot)
        assert app.env == "production" and view.running is None
        result = view.result
        assert result is not None
        assert (result.total, result.same, result.changed, result.newly_failing, result.fixed) == (4, 1, 1, 1, 1)
        status = static_text(app, "#replay-status")
        assert "4 replayed: 1 same · 1 changed · 1 newly failing · 1 fixed" in status
        assert "llm mock" in status
        assert any("4 replayed" in n for n in notifications(app))

        by_name = {e.input["name"]: e for e in result.executions}
        table = app.query_one("#replay-table", DataTable)
        assert table.row_count == 3  # the same one is hidden
        assert view.place == by_name["Bob"].execution_id  # the newly failing one first
        detail = static_text(app, "#replay-detail-body", width=140)
        assert "newly failing" in detail and "production (recorded)" in detail and "staging (replayed)" in detail
        assert "hello, Bob" in detail and "error: " in detail and "v2 breaks Bob" in detail
        assert "succeeded → failed" in detail

        table.move_cursor(row=table.get_row_index(by_name["Ada"].execution_id))
        await settle(pilot)
        detail = static_text(app, "#replay-detail-body", width=140)
        assert "~ changed" in detail and "hello, Ada" in detail and "howdy, Ada" in detail
        assert "message changed" in detail and "ms →" in detail
        row = [str(c) for c in table.get_row(by_name["Ada"].execution_id)]
        assert row[1] == "succeeded → succeeded" and row[2] == "~ changed" and row[3].endswith(" ms")

        table.move_cursor(row=table.get_row_index(by_name["Dee"].execution_id))
        await settle(pilot)
        detail = static_text(app, "#replay-detail-body", width=140)
        assert "✓ fixed" in detail and "v1 cannot greet Dee" in detail and "failed → succeeded" in detail

        table.focus()
        await pilot.press("f")
        await settle(pilot)
        assert table.row_count == 4 and str(table.get_row(by_name["Cy"].execution_id)[2]) == "= same"
    replayed = backend.list_executions("staging", agent="bot", source="replay", limit=10)
    assert len(replayed) == 4
    assert len(backend.list_executions("production", agent="bot", limit=10)) == 4  # production untouched


async def test_replay_refusals_are_shown_on_the_screen(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        view = await open_replay(app, pilot)
        agent = app.query_one("#replay-agent", Select)
        assert "fresh (not in production)" in [str(prompt) for prompt, _ in agent._options]
        agent.value = "fresh"
        app.query_one("#replay-last", Input).value = "0"
        await pilot.click("#replay-run")
        await settle(pilot)
        assert view.running is None
        assert "last: a whole number from 1 to 10000" in str(app.query_one("#replay-form-error").render())
        last = app.query_one("#replay-last", Input)
        last.value = "5"
        last.focus()
        await pilot.press("enter")  # (enter in the form runs it too)
        await until(pilot, lambda: view.last_error is not None)
        await settle(pilot)
        assert view.result is None
        assert "has no recorded production executions to replay" in static_text(app, "#replay-status")
        assert not app.query_one("#replay-table", DataTable).display
