"""SVG snapshots of the dashboard's main screens in both environments (pytest-textual-snapshot).

The data is real (a LocalBackend over a workspace built here) but frozen:
rf's ids and timestamps come from a fake clock and a counter while it is
built, and the app gets a fixed clock for "5m ago" columns. Terminal 120x40.

Update after an intended change with ``pytest tests/test_tui_snapshots.py
--snapshot-update`` and look at the SVGs in tests/__snapshots__/ before
committing them.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import types
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TextArea
from textual.worker import WorkerState

import rf.ids
from conftest import HELLO_PY, write_agent
from rf.client import LocalBackend, open_local
from rf.config import init_workspace, snapshot_dir
from rf.models import Execution
from rf.tui.app import RfApp

SIZE = (120, 40)
BASE = _dt.datetime(2026, 3, 2, 9, 0, 0)
NOW = BASE + _dt.timedelta(hours=2)  # what the app's clock says

SUPPORT_TOML = (
    'description = "Answers support questions"\nentrypoint = "agent:handle"\n'
    'prompts = ["greeting"]\nconnectors = ["crm"]\n'
)
SUPPORT_PY = (
    "def handle(input, ctx):\n"
    "    text = ctx.prompts.render('greeting', name=input.get('name', 'you'))\n"
    "    return {'message': text}\n"
)


@pytest.fixture(autouse=True)
def _colors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots show the real colours (the suite sets NO_COLOR for the CLI's sake)."""
    monkeypatch.delenv("NO_COLOR", raising=False)


class _Clock:
    """rf.ids' time sources, frozen: every reading advances one second (ids: one millisecond)."""

    def __init__(self) -> None:
        self.ticks = 0

    def now(self, tz: Any = None) -> _dt.datetime:
        self.ticks += 1
        moment = BASE + _dt.timedelta(seconds=self.ticks)
        return moment.replace(tzinfo=tz) if tz is not None else moment

    def time_ns(self) -> int:
        self.ticks += 1
        return int((BASE + _dt.timedelta(seconds=self.ticks)).replace(tzinfo=_dt.UTC).timestamp() * 1e9)

    def getrandbits(self, n: int) -> int:
        self.ticks += 1
        return self.ticks


@pytest.fixture(scope="module")
def frozen_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBackend]:
    clock = _Clock()

    class FrozenDatetime(_dt.datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return clock.now(tz)

    fake_dt = types.SimpleNamespace(datetime=FrozenDatetime, UTC=_dt.UTC, timedelta=_dt.timedelta)
    root = tmp_path_factory.mktemp("snap") / "acme"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rf.ids, "_dt", fake_dt)
        mp.setattr(rf.ids, "time", types.SimpleNamespace(time_ns=clock.time_ns))
        mp.setattr(rf.ids, "_random", types.SimpleNamespace(getrandbits=clock.getrandbits))
        mp.setenv("RF_SECRETS_FILE", str(root.parent / "secrets.json"))
        mp.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")
        ws = init_workspace(root, name="acme")
        write_agent(ws.root, "hello", toml='description = "Says hello"\nentrypoint = "agent:handle"\n')
        write_agent(ws.root, "support", SUPPORT_PY, SUPPORT_TOML)
        write_agent(ws.root, "draft", toml='description = "Work in progress"\nentrypoint = "agent:handle"\n')
        b = open_local(ws)
        b.create_prompt("greeting", "Hello {{name}}!\nHow can I help you today?", "ada", "first version")
        b.publish_prompt("greeting", "ada")
        b.set_prompt(
            "greeting",
            "Hello {{name}}, welcome back!\nHow can I help you today?\nReply in {{language}}.",
            "ada",
            "warmer, multilingual",
        )
        b.create_connector("crm", "https://crm.example.com/api")
        b.add_resource("crm", "get-customer", "GET", "/customers/{id}", mock_response={"id": 1, "name": "Ada"})
        b.add_resource("crm", "list-orders", "GET", "/orders")
        b.publish_connector("crm", "ada")
        b.add_resource("crm", "create-ticket", "POST", "/tickets", description="Open a ticket")
        b.remove_resource("crm", "list-orders")
        b.edit_resource("crm", "get-customer", path="/v2/customers/{id}")
        b.deploy("hello", snapshot_dir(ws.agents_dir / "hello"), "first greeting", "ada")
        b.promote("hello", "ada")
        write_agent(
            ws.root,
            "hello",
            HELLO_PY.replace("hello, {name}", "hello there, {name}"),
            toml='description = "Says hello"\nentrypoint = "agent:handle"\n',
        )
        b.deploy("hello", snapshot_dir(ws.agents_dir / "hello"), "friendlier greeting", "bob")
        b.deploy("support", snapshot_dir(ws.agents_dir / "support"), "support agent", "ada")
        for n, (env, agent, status) in enumerate(
            [
                ("staging", "hello", "succeeded"),
                ("staging", "support", "failed"),
                ("staging", "hello", "succeeded"),
                ("production", "hello", "succeeded"),
                ("production", "hello", "succeeded"),
            ]
        ):
            started = rf.ids.iso(rf.ids.utcnow())
            b.services.store.record_execution(
                Execution(
                    id=rf.ids.new_id("ex"),
                    env=env,
                    agent=agent,
                    commit="c0ffee00" if env == "staging" else "beefcafe",
                    source="endpoint" if n % 2 else "test",
                    status=status,
                    input={"name": "Ada", "n": n},
                    output=None if status == "failed" else {"message": f"hello, Ada ({env})"},
                    error="KeyError: 'message'" if status == "failed" else None,
                    error_type="exception" if status == "failed" else None,
                    traceback="Traceback (most recent call last):\n  File \"agent.py\", line 2, in handle\nKeyError: 'message'"
                    if status == "failed"
                    else None,
                    logs="INFO greeting Ada",
                    started_at=started,
                    ended_at=started,
                    duration_ms=12.5 + n,
                )
            )
        b.services.store.flush()
    try:
        yield b
    finally:
        b.close()


def _busy(pilot: Pilot[None]) -> bool:
    """A backend call still running, or a table whose new rows are not measured yet (DataTable
    sizes its columns when the app is idle: a busy machine can delay that past a pause)."""
    if any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in pilot.app.workers):
        return True
    return any(t._require_update_dimensions or t._new_rows or t._updated_cells
               for t in pilot.app.screen.query(DataTable))


async def settle(pilot: Pilot[None]) -> None:
    """Wait until every backend call (and the calls their answers start) has finished and painted."""
    for _ in range(400):
        await pilot.pause()
        if not _busy(pilot):
            await pilot.pause()
            if not _busy(pilot):
                # Once more after a real pause: on a busy machine the idle pass that measures
                # DataTable columns can come after two quiet pauses (rare, but seen).
                await asyncio.sleep(0.05)
                await pilot.pause()
                if not _busy(pilot):
                    return
        await asyncio.sleep(0.01)
    raise AssertionError("the app did not settle")


def app_for(backend: LocalBackend) -> RfApp:
    return RfApp(backend, clock=lambda: NOW, poll_interval=None, warm_views=())


def keys(*presses: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Press keys one by one, letting every backend call finish in between (deterministic screens)."""

    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        for key in presses:
            await pilot.press(key)
            await settle(pilot)
        for widget in [*pilot.app.screen.query(Input), *pilot.app.screen.query(TextArea)]:
            widget.cursor_blink = False
        await settle(pilot)

    return run


Snap = Callable[..., bool]


def test_agents_staging(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys())


def test_agents_production(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("e"))


def test_releases_prompt_side_by_side(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("5"))


def test_releases_connector_diff(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("5", "down"))


def test_releases_agent_diff_production(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("e", "5", "down", "down"))


def test_releases_publish_plan(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("5", "p"))


def test_releases_history(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("5", "h"))


def test_prompts_staging(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("2"))


def test_prompts_production_history(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("2", "e", "v"))


def test_prompt_editor(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("2", "i"))


def test_connectors_staging(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("3"))


def test_executions_staging_failed(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("6", "down"))


def test_executions_production(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("6", "e"))


def test_help(snap_compare: Snap, frozen_backend: LocalBackend) -> None:
    assert snap_compare(app_for(frozen_backend), terminal_size=SIZE, run_before=keys("question_mark"))


def test_snapshot_data_is_frozen(frozen_backend: LocalBackend, tmp_path: Path) -> None:
    """The fixture really is deterministic: ids come from the frozen clock."""
    executions = frozen_backend.list_executions("staging")
    assert [e.started_at[:10] for e in executions] == ["2026-03-02"] * 3
    assert frozen_backend.list_releases()[0].created_at.startswith("2026-03-02T09:")
