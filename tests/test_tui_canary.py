"""Pilot tests of the dashboard's canary releases (issue 21): the publish dialog's percent field,
the Releases screen's Canary tab (both arms side by side; weight, promote and abort, each
confirmed), the production badge, the history's canary kinds, and the arm column of the
Executions, Sessions and Traces screens.

A real in-process store (LocalBackend), as tests/test_tui.py: the module builds one workspace
(agent `bot` v1 in production, v2 in staging; agent `old` in production, deleted in staging, so
its removal is pending) and each test works on a copy of it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_tui import SIZE, make_app, notifications, screen_text, settle
from test_tui_evals import static_text
from textual.widgets import Button, DataTable, Input, SelectionList

from conftest import HELLO_PY, write_agent
from rf import api
from rf.client import LocalBackend, open_local
from rf.config import init_workspace, load_workspace, snapshot_dir
from rf.errors import NotFound
from rf.ids import iso, new_id, utcnow
from rf.models import Execution
from rf.tui import app as app_module
from rf.tui.modals import ConfirmModal
from rf.tui.views.canary import CanaryAbortModal, CanaryWeightModal, PublishConfirmModal
from rf.tui.views.releases import ReleasesView
from rf.tui.widgets import EnvBadge

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RF_SECRETS_FILE", str(tmp_path / "secrets.json"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = init_workspace(tmp_path_factory.mktemp("canary-tui") / "ws")
    write_agent(ws.root, "bot")
    write_agent(ws.root, "old")
    b = open_local(ws)
    try:
        b.deploy("bot", snapshot_dir(ws.agents_dir / "bot"), "v1", "ada")
        b.deploy("old", snapshot_dir(ws.agents_dir / "old"), "old v1", "ada")
        b.publish_release(["agent:bot", "agent:old"], author="ada")
        write_agent(ws.root, "bot", HELLO_PY.replace("hello, {name}", "hi there, {name}"))
        b.deploy("bot", snapshot_dir(ws.agents_dir / "bot"), "v2: hi there", "ada")
        b.delete_agent("old")
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


def start_canary(b: LocalBackend, percent: float) -> Any:
    return b.publish_release(["agent:bot"], author="ada", canary=percent)


def record(b: LocalBackend, arm: str, release_id: str | None, *, failed: bool = False, ms: float = 10.0) -> None:
    now = iso(utcnow())
    b.services.store.record_execution(Execution(
        id=new_id("ex"), env="production", agent="bot", commit="c0ffee00", source="endpoint",
        status="failed" if failed else "succeeded", input={"name": "Ada"}, output=None if failed else {"m": arm},
        error="boom" if failed else None, started_at=now, ended_at=now, duration_ms=ms,
        release_id=release_id, arm=arm))


def badge(app: Any) -> str:
    return str(app.query_one(EnvBadge).label)


async def test_publish_dialog_starts_a_canary_and_the_badge_says_so(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        view = app.query_one(ReleasesView)
        assert [f"{i.kind}:{i.name}" for i in view.items] == ["agent:bot", "agent:old"]
        # Both items: old's removal cannot be canaried, and the dialog shows the service's refusal.
        await pilot.press("p")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, PublishConfirmModal)
        dialog.query_one("#canary", Input).value = "10"
        dialog.query_one("#canary", Input).focus()
        await pilot.press("enter")
        await settle(pilot)
        refusal = [n for n in notifications(app) if "not canaried" in n]
        assert refusal and "agent old" in refusal[0] and "publish them separately" in refusal[0]
        assert "Nothing was published" in refusal[0]
        with pytest.raises(NotFound):
            backend.canary_status()
        assert len(view.items) == 2
        items = app.query_one("#release-items", SelectionList)
        items.deselect("agent:old")  # the removal cannot be canaried: publish bot alone
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, PublishConfirmModal) and isinstance(dialog, ConfirmModal)
        field = dialog.query_one("#canary", Input)
        field.focus()
        await pilot.press("1", "5", "0")  # out of range: an inline error, nothing published
        await pilot.press("enter")
        await settle(pilot)
        assert app.screen is dialog and "above 0 and below 100" in str(dialog.query_one("#canary-error").render())
        field.value = ""
        await pilot.press("1", "0")
        assert str(dialog.query_one("#confirm", Button).label) == "Start canary"
        await pilot.press("enter")
        await settle(pilot)
        assert not isinstance(app.screen, PublishConfirmModal)
        canary = backend.canary_status()
        assert (canary.status, canary.weight, [i.name for i in canary.items]) == ("running", 10.0, ["bot"])
        assert any("Started canary release" in n for n in notifications(app))
        assert backend.get_agent("bot").production_commit != backend.get_agent("bot").staging_commit
        assert badge(app) == "STAGING"  # the badge speaks of production only
        assert "canary" in static_text(app, "#release-canary-line")
        await pilot.press("e")
        await settle(pilot)
        assert badge(app) == "PRODUCTION · canary 10 %"
        assert "PRODUCTION · canary 10 %" in screen_text(app)


async def test_canary_tab_shows_both_arms_then_weight_and_promote(backend: LocalBackend) -> None:
    release = start_canary(backend, 25)
    stable_release = backend.canary_status().stable_release_id
    for n in range(6):
        record(backend, "stable", stable_release, ms=10.0 + n)
    for n in range(4):
        record(backend, "canary", release.id, failed=n == 0, ms=30.0)
    app = make_app(backend, env="production")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        view = app.query_one(ReleasesView)
        assert view.tab == "releases-canary"
        text = static_text(app, "#release-canary-body")
        assert f"canary {release.id}" in text and "running" in text and "25 % of production" in text
        header = next(line for line in text.splitlines() if "stable" in line and "canary" in line
                      and "executions" not in line and "weight" not in line)
        assert header.index("stable") < header.index("canary")  # side by side: a column each
        row = next(line for line in text.splitlines() if line.strip().startswith("executions"))
        assert row.split()[1:] == ["6", "4"]
        rate = next(line for line in text.splitlines() if line.strip().startswith("failure rate (95"))
        assert "0.0%" in rate and "25.0%" in rate
        assert "no difference yet" in text and "weight" in text
        footer = screen_text(app)
        assert "Promote canary" in footer and "Abort canary" in footer and "Weight" in footer

        await pilot.press("w")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, CanaryWeightModal)
        dialog.query_one("#weight", Input).value = "50"
        await pilot.press("enter")
        await settle(pilot)
        assert backend.canary_status().weight == 50.0
        assert badge(app) == "PRODUCTION · canary 50 %"
        assert "50 % of production" in static_text(app, "#release-canary-body")

        await pilot.press("p")  # on the Canary tab: promote (confirmed like a publish)
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        assert "Promote canary" in str(app.screen.query_one("#dialog-title").render())
        await pilot.press("y")
        await settle(pilot)
        canary = backend.canary_status(release.id)
        assert canary.status == "promoted"
        assert backend.get_agent("bot").production_commit == backend.get_agent("bot").staging_commit
        assert badge(app) == "PRODUCTION"
        text = static_text(app, "#release-canary-body")
        assert "promoted" in text and "p promotes" not in text
        assert "Promote canary" not in screen_text(app)  # nothing to decide any more

        await pilot.press("h")  # the history labels each canary step
        await settle(pilot)
        kinds = [r.kind for r in view.releases]
        assert kinds[:3] == ["canary-promote", "canary-weight", "canary"]
        table = app.query_one("#release-history", DataTable)
        cells = [str(table.get_cell_at((n, 3))) for n in range(3)]
        assert cells == ["canary-promote", "canary-weight", "canary"]
        assert "weight → 50 %" in str(table.get_cell_at((1, 5)))
        table.move_cursor(row=1)
        await settle(pilot)
        detail = static_text(app, "#release-detail-body")
        assert "set to 50 %" in detail and "nothing to roll back" in detail


async def test_the_badge_polls_at_most_every_few_seconds_and_abort_asks_for_a_reason(
        backend: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a screen that does not fetch the canary (Agents), the badge asks at most once every
    CANARY_POLL_S while production is shown, and sees the weight change; then an abort from the
    Canary tab, which needs a reason."""
    release = start_canary(backend, 20)
    name = "canary_running" if "canary_running" in api.BY_NAME else "canary_status"
    calls: list[str] = []
    real = getattr(backend, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(backend, name, counted)
    app = make_app(backend, env="production")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert badge(app) == "PRODUCTION · canary 20 %" and len(calls) == 1
        for _ in range(3):  # the 2-second poll, three times within CANARY_POLL_S: no question
            app._poll()
            await settle(pilot)
        assert len(calls) == 1
        backend.set_canary_weight(30, "more", "ada")  # (as another dashboard or the CLI would)
        app._canary_checked -= app_module.CANARY_POLL_S  # time passes
        app._poll()
        await settle(pilot)
        assert len(calls) == 2 and badge(app) == "PRODUCTION · canary 30 %"

        await pilot.press("5")
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        await pilot.press("x")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, CanaryAbortModal)
        await pilot.press("enter")  # no reason: refused inline
        await settle(pilot)
        assert app.screen is dialog and "A reason is required" in str(dialog.query_one("#reason-error").render())
        assert backend.canary_status().status == "running"
        dialog.query_one("#reason", Input).value = "timeouts on the canary"
        await pilot.press("enter")
        await settle(pilot)
        canary = backend.canary_status(release.id)
        assert canary.status == "aborted"
        latest = backend.list_releases(1)[0]
        assert latest.kind == "canary-abort" and "timeouts on the canary" in latest.message
        assert any("Aborted canary" in n for n in notifications(app))
        assert not app.query_one("#release-canary-line").display
        assert badge(app) == "PRODUCTION" and app.canary is None  # the Releases screen's own fetch told it
        await pilot.press("1", "e")  # staging: the badge never asks
        asked = len(calls)
        app._canary_checked -= app_module.CANARY_POLL_S
        app._poll()
        await settle(pilot)
        assert len(calls) == asked and badge(app) == "STAGING"


async def test_executions_sessions_and_traces_show_the_arm(backend: LocalBackend) -> None:
    """Real production calls while a canary runs on 50 %: each list shows the arm of each row."""
    release = start_canary(backend, 50)
    arms = {}
    for n in range(6):
        ex = backend.invoke("production", "bot", {"name": f"u{n}"}, f"user-{n}")
        arms[ex.id] = ex.arm
    assert set(arms.values()) == {"stable", "canary"}  # (fixed session ids: a fixed split)
    backend.invoke("staging", "bot", {"name": "dev"})
    backend.services.store.flush()
    app = make_app(backend, env="production")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        await settle(pilot)
        table = app.query_one("#executions-table", DataTable)
        labels = [str(c.label) for c in table.ordered_columns]
        assert labels[:5] == ["execution", "started", "agent", "status", "arm"]
        shown = {str(table.get_cell_at((n, 0))): str(table.get_cell_at((n, 4))) for n in range(table.row_count)}
        assert shown == arms
        detail = static_text(app, "#execution-detail-body")
        first = str(table.get_cell_at((0, 0)))
        assert f"{arms[first]} arm" in detail and "release rel_" in detail

        await pilot.press("7")
        await settle(pilot)
        sessions = app.query_one("#sessions-table", DataTable)
        assert [str(c.label) for c in sessions.ordered_columns] == ["session", "agent", "arm", "msgs", "active"]
        by_session = {str(sessions.get_cell_at((n, 0))): str(sessions.get_cell_at((n, 2)))
                      for n in range(sessions.row_count)}
        assert sorted(by_session.values()) == sorted(arms.values())

        await pilot.press("8")
        await settle(pilot)
        traces = app.query_one("#traces-table", DataTable)
        assert "arm" in [str(c.label) for c in traces.ordered_columns]
        assert {str(traces.get_cell_at((n, 0))): str(traces.get_cell_at((n, 3)))
                for n in range(traces.row_count)} == arms

        await pilot.press("e")  # staging: no arm, no column
        await pilot.press("6")
        await settle(pilot)
        table = app.query_one("#executions-table", DataTable)
        assert "arm" not in [str(c.label) for c in table.ordered_columns] and table.row_count == 1
    assert release.id in {backend.get_execution(i, "production").release_id for i in arms}
