"""Pilot tests of the dashboard (``rf ui``) over a real in-process store (LocalBackend).

No server: the app gets its Backend injected. Each test copies a prepared
workspace (agents deployed and promoted, a published prompt, executions), so
the slow parts (code validation subprocesses) run once per module.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.color import Color
from textual.pilot import Pilot
from textual.worker import WorkerState

from conftest import HELLO_PY, write_agent
from rf.client import LocalBackend, open_local
from rf.config import init_workspace, load_workspace, snapshot_dir
from rf.errors import NotFound, RfError
from rf.ids import iso, new_id, utcnow
from rf.models import Execution
from rf.tui.app import RfApp
from rf.tui.modals import ConfirmModal, HelpScreen
from rf.tui.views import VIEW_CLASSES
from rf.tui.views.agents import AgentsView, DeployModal
from rf.tui.views.executions import PAGE, ExecutionsView
from rf.tui.views.prompts import PromptEditor, PromptsView
from rf.tui.views.releases import ReleasesView
from rf.tui.widgets import EnvBadge, ReadOnlyBanner

SIZE = (120, 40)

pytestmark = pytest.mark.anyio  # anyio's pytest plugin (installed with httpx) runs the async tests


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def _secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RF_SECRETS_FILE", str(tmp_path / "secrets.json"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "rf.secrets.FileKeyring")


def record(
    backend: LocalBackend,
    env: str,
    agent: str = "hello",
    status: str = "succeeded",
    source: str = "invoke",
    output: Any = None,
) -> Execution:
    now = iso(utcnow())
    ex = Execution(
        id=new_id("ex"),
        env=env,
        agent=agent,
        commit="c0ffee00",
        source=source,
        status=status,
        input={"name": "Ada"},
        output=output if output is not None else {"v": f"from-{env}"},
        error="boom" if status == "failed" else None,
        started_at=now,
        ended_at=now,
        duration_ms=12.5,
    )
    backend.services.store.record_execution(ex)
    return ex


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace: hello (staging 1 commit ahead of production), quiet (staging only), prompt greeting."""
    ws = init_workspace(tmp_path_factory.mktemp("tpl") / "ws")
    write_agent(ws.root, "hello")
    write_agent(ws.root, "quiet")
    b = open_local(ws)
    try:
        b.deploy("hello", snapshot_dir(ws.agents_dir / "hello"), "first", "ada")
        b.promote("hello", "ada")
        write_agent(ws.root, "hello", HELLO_PY + "\n# v2\n")
        b.deploy("hello", snapshot_dir(ws.agents_dir / "hello"), "second", "ada")
        b.deploy("quiet", snapshot_dir(ws.agents_dir / "quiet"), "only staging", "ada")
        b.create_prompt("greeting", "Hello {{name}}!", "ada", "first")
        b.publish_prompt("greeting", "ada")
        record(b, "staging", output={"v": "from-staging"})
        record(b, "production", output={"v": "from-production"})
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


def make_app(backend: Any, **kwargs: Any) -> RfApp:
    kwargs.setdefault("poll_interval", None)  # tests poll by hand (app._poll())
    kwargs.setdefault("warm_views", ())  # no background mounting: faster, and nothing to wait for
    return RfApp(backend, **kwargs)


async def settle(pilot: Pilot[None]) -> None:
    """Wait until every backend call (and the calls their answers start) has finished and painted."""
    app = pilot.app
    for _ in range(400):
        await pilot.pause()
        busy = [w for w in app.workers if w.state in (WorkerState.PENDING, WorkerState.RUNNING)]
        if not busy:
            await pilot.pause()
            if not any(w.state in (WorkerState.PENDING, WorkerState.RUNNING) for w in app.workers):
                return
        await asyncio.sleep(0.01)
    raise AssertionError("the app did not settle")


def notifications(app: RfApp) -> list[str]:
    return [n.message for n in app._notifications]


def detail_text(app: RfApp, selector: str) -> str:
    from textual.widgets import Static

    widget = app.query_one(selector, Static)
    return str(widget.render())


def screen_text(app: RfApp) -> str:
    """What the terminal shows, as plain text."""
    return "\n".join(line.text for line in app.screen._compositor.render_strips())  # type: ignore[attr-defined]


# ------------------------------------------------------------ layout


async def test_the_sidebar_gives_way_on_a_narrow_terminal(backend: LocalBackend) -> None:
    """Under 100 columns the sidebar starts hidden (the views get its 22 columns); ctrl+b
    toggles it at any width, and a resize after that keeps the user's choice."""
    app = make_app(backend)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        sidebar = app.query_one("#sidebar")
        assert not sidebar.display and "Credentials" not in screen_text(app)
        assert "hello" in screen_text(app)  # the Agents view, full width
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert sidebar.display and "Credentials" in screen_text(app)  # (24 rows: the last entries are cut)
        await pilot.resize_terminal(120, 40)
        await settle(pilot)
        assert sidebar.display
        await pilot.press("ctrl+b")
        await settle(pilot)
        assert not sidebar.display
        await pilot.press("3")  # the number keys still switch views
        await settle(pilot)
        assert app.current_view == "connectors"
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.query_one("#sidebar").display and "Data sources" in screen_text(app)


# ------------------------------------------------------------ environment switch


async def test_switching_environment_changes_badge_colors_data_and_read_only(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        badge = app.query_one(EnvBadge)
        banner = app.query_one(ReadOnlyBanner)
        assert "STAGING" in str(badge.render())
        assert badge.styles.background == Color.parse("#f59e0b")
        assert "Staging: every edit happens here" in str(banner.render())
        view = app.query_one(AgentsView)
        assert view.check_action("deploy", ()) is True
        assert "Recent executions in staging" in screen_text(app)
        assert "from-staging" in screen_text(app), screen_text(app)

        await pilot.press("e")
        await settle(pilot)
        assert app.env == "production"
        assert "PRODUCTION" in str(badge.render())
        assert badge.styles.background == Color.parse("#10b981")
        assert banner.has_class("-production")
        text = screen_text(app)
        assert "Production is read-only. Press e to switch to staging" in text
        assert "Recent executions in production" in text and "from-production" in text
        assert "from-staging" not in text
        assert view.check_action("deploy", ()) is False and view.check_action("promote", ()) is False
        # staging-only agents are not listed in production
        assert [r.name for r in view.rows] == ["hello", "quiet"] or "not deployed" not in text

        await pilot.click("#env-badge")
        await settle(pilot)
        assert app.env == "staging" and "STAGING" in str(badge.render())


async def test_switch_keeps_the_selected_row(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(AgentsView)
        assert [r.name for r in view.rows] == ["hello", "quiet"]
        await pilot.press("down")
        await settle(pilot)
        assert view.selected() is not None and view.selected().name == "quiet"  # type: ignore[union-attr]
        await pilot.press("e")
        await settle(pilot)
        assert view.selected().name == "quiet"  # type: ignore[union-attr]
        await pilot.press("e")
        await settle(pilot)
        assert view.selected().name == "quiet"  # type: ignore[union-attr]


async def test_every_edit_action_is_absent_or_refused_in_production(backend: LocalBackend) -> None:
    app = make_app(backend, env="production")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        write_views = [cls for cls in VIEW_CLASSES if cls.WRITE_ACTIONS]
        assert {cls.KEY for cls in write_views} >= {"agents", "prompts", "connectors", "credentials", "providers"}
        for cls in write_views:
            await app.action_show(cls.KEY)
            view = app.view(cls.KEY)
            for action in cls.WRITE_ACTIONS:
                assert view.check_action(action, ()) is False, (cls.KEY, action)
        await pilot.press("e", "e")  # a round trip keeps everything read-only once back in production
        await settle(pilot)
        # the keys do nothing (no dialog), the footer does not offer them
        for key, view_key, keys in (("1", "agents", ("d", "p")), ("2", "prompts", ("i", "n"))):
            await pilot.press(key)
            await settle(pilot)
            for k in keys:
                await pilot.press(k)
                await pilot.pause()
                assert not isinstance(app.screen, ConfirmModal | DeployModal | PromptEditor), (view_key, k)
            footer = screen_text(app).splitlines()[-1]
            assert "Deploy" not in footer and "Edit draft" not in footer and "New prompt" not in footer
        # reached some other way (palette, a stale binding), the action refuses
        app.query_one(AgentsView).action_deploy()
        app.query_one(PromptsView).action_edit()
        await pilot.pause()
        assert not isinstance(app.screen, DeployModal | PromptEditor)
        assert any("read-only" in m for m in notifications(app))
        # the palette offers no edits in production, but publishing stays
        titles = [c.title for v in app.views() for c in v.commands()]
        assert not [t for t in titles if t.startswith(("Deploy", "Promote", "Edit", "New", "Rotate", "Add"))]
        await pilot.press("5")
        await settle(pilot)
        release_view = app.query_one(ReleasesView)
        assert release_view.check_action("publish", ()) is True
        assert any(t.startswith("Publish") for t in (c.title for c in release_view.commands()))


# ------------------------------------------------------------ prompts → releases → production


async def test_edit_a_prompt_draft_and_see_it_in_releases(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        assert "Hello {{name}}!" in screen_text(app)
        await pilot.press("i")
        await settle(pilot)
        editor = app.screen
        assert isinstance(editor, PromptEditor)
        from textual.widgets import TextArea

        editor.query_one("#text", TextArea).text = "Hello {{name}}, welcome back!"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, PromptEditor)
        assert backend.get_prompt("greeting", "staging").version == 2
        assert backend.get_prompt("greeting", "production").version == 1
        assert any("Saved greeting v2" in m for m in notifications(app))
        await pilot.press("5")
        await settle(pilot)
        view = app.query_one(ReleasesView)
        assert [(i.kind, i.name) for i in view.items] == [
            ("prompt", "greeting"),
            ("agent", "hello"),
            ("agent", "quiet"),
        ]
        text = screen_text(app)
        assert "draft v2 vs published v1" in text
        assert "welcome back!" in text  # the side-by-side diff of the highlighted item


async def test_prompt_editor_shows_bad_input_inline_and_saves_nothing(backend: LocalBackend) -> None:
    from textual.widgets import Input, Label, TextArea

    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("2")
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        editor = app.screen
        assert isinstance(editor, PromptEditor)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "A name is required." in str(editor.query_one("#name-error", Label).render())
        assert "The text is empty" in str(editor.query_one("#text-error", Label).render())
        editor.query_one("#name", Input).value = "Bad Name!"
        editor.query_one("#text", TextArea).text = "Hi {{ name"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert str(editor.query_one("#name-error", Label).render()) != ""
        editor.query_one("#name", Input).value = "welcome"
        await pilot.press("ctrl+s")
        await settle(pilot)
        # the template error comes from the service, shown next to the text
        assert isinstance(app.screen, PromptEditor)
        error = str(editor.query_one("#text-error", Label).render())
        assert "welcome" in error and error
        with pytest.raises(NotFound):
            backend.get_prompt("welcome", "staging")
        editor.query_one("#text", TextArea).text = "Hi {{ name }}"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, PromptEditor)
        assert backend.get_prompt("welcome", "staging").text == "Hi {{ name }}"


async def test_publish_from_releases_changes_production(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        view = app.query_one(ReleasesView)
        assert len(view.items) == 2  # hello (ahead), quiet (new)
        await pilot.press("down", "space")  # untick the second item (quiet)
        await settle(pilot)
        assert [i.name for i in view.chosen()] == ["hello"]
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        assert "Publish 1 change to production?" in screen_text(app)
        await pilot.press("y")
        await settle(pilot)
        hello = backend.get_agent("hello")
        assert hello.production_commit == hello.staging_commit
        assert backend.get_agent("quiet").production_commit is None
        assert any("Published release" in m for m in notifications(app))
        assert [i.name for i in view.items] == ["quiet"]
        assert len(view.releases) == 3  # promote + prompt publish + this one


async def test_publish_with_a_stale_review_is_refused(backend: LocalBackend) -> None:
    app = make_app(backend, env="production")  # publishing is offered in production too
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        before = backend.get_agent("hello").production_commit
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        # staging moves while the plan is on screen
        backend.set_prompt("greeting", "Hello {{name}}, changed meanwhile", "bob")
        await pilot.press("y")
        await settle(pilot)
        messages = notifications(app)
        assert any("changed since you reviewed" in m and "Nothing was published" in m for m in messages), messages
        assert backend.get_agent("hello").production_commit == before
        assert backend.get_prompt("greeting", "production").version == 1
        # the view reloaded: the new item is there to review
        view = app.query_one(ReleasesView)
        assert ("prompt", "greeting") in [(i.kind, i.name) for i in view.items]


async def test_rollback_from_history(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5")
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        staging = backend.get_agent("hello").staging_commit
        assert backend.get_agent("hello").production_commit == staging
        await pilot.press("h")
        await settle(pilot)
        view = app.query_one(ReleasesView)
        assert view.tab == "releases-history"
        await pilot.press("up", "up", "up")  # the newest release
        await settle(pilot)
        assert view.selected_release() is view.releases[0]
        await pilot.press("b")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        await pilot.press("y")
        await settle(pilot)
        assert backend.get_agent("hello").production_commit != staging, notifications(app)
        assert view.releases[0].kind == "rollback"


# ------------------------------------------------------------ agents: deploy and promote


async def test_the_agents_title_counts_what_is_not_deployed(backend: LocalBackend) -> None:
    """An agent only in agents/ is listed with "not deployed"; the title says so, instead of
    counting the deployed ones alone ("0 agents" above a row, in a new workspace)."""
    ws = backend.workspace
    assert ws is not None
    write_agent(ws.root, "draft")
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "2 agents deployed · 1 not deployed yet · 1 with changes to promote" in text, text
        shutil.rmtree(ws.agents_dir / "draft")
        app._poll()
        await settle(pilot)
        text = screen_text(app)
        assert "2 agents · 1 with changes to promote" in text and "not deployed" not in text, text


async def test_deploy_and_promote_from_the_agents_view(backend: LocalBackend) -> None:
    ws = backend.workspace
    assert ws is not None
    write_agent(ws.root, "hello", HELLO_PY + "\n# v3\n")
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        before = backend.get_agent("hello").staging_commit
        await pilot.press("d")
        await settle(pilot)
        assert isinstance(app.screen, DeployModal)
        await pilot.press(*"third", "enter")
        await settle(pilot)
        after = backend.get_agent("hello")
        assert after.staging_commit != before
        assert backend.history("hello")[0].message == "third"
        await pilot.press("p")
        await settle(pilot)
        assert isinstance(app.screen, ConfirmModal)
        assert "Promote hello to production" in screen_text(app)
        assert "2 commits not in production" in screen_text(app)
        await pilot.press("y")
        await settle(pilot)
        assert backend.get_agent("hello").production_commit == after.staging_commit


async def test_deploy_errors_are_shown_inline(backend: LocalBackend) -> None:
    from textual.widgets import Label

    ws = backend.workspace
    assert ws is not None
    write_agent(ws.root, "hello", "def handle(input, ctx):\n    return (\n")
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("d")
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(app.screen, DeployModal)
        assert "agent.py" in str(app.screen.query_one("#message-error", Label).render())


# ------------------------------------------------------------ executions


async def test_executions_pages_filters_and_live_rows(backend: LocalBackend) -> None:
    for n in range(PAGE + 30):
        record(backend, "staging", status="failed" if n % 10 == 0 else "succeeded")
    app = make_app(backend, start_view="executions")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(ExecutionsView)
        assert len(view.executions) == PAGE
        newest = view.executions[0].id
        assert [e.id for e in view.executions] == sorted((e.id for e in view.executions), reverse=True)
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert len(view.executions) == 31  # 130 + the template's one
        assert all(e.id < newest for e in view.executions)
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert view.executions[0].id == newest
        view._quick(status="failed")
        await settle(pilot)
        assert view.executions and {e.status for e in view.executions} == {"failed"}
        view.action_clear_filters()
        await settle(pilot)
        # live: a new execution appears on the next poll, the selected row stays
        selected = view.place
        fresh = record(backend, "staging")
        app._poll()
        await settle(pilot)
        assert view.executions[0].id == fresh.id
        assert view.place == selected
        # the other environment has its own executions
        await pilot.press("e")
        await settle(pilot)
        assert [e.env for e in view.executions] == ["production"]
        assert "from-production" in screen_text(app)


async def test_executions_time_filter_rejects_bad_input_inline(backend: LocalBackend) -> None:
    from textual.widgets import Input, Label

    app = make_app(backend, start_view="executions")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(ExecutionsView)
        box = view.query_one("#filter-before", Input)
        box.focus()
        box.value = "yesterday-ish"
        await pilot.press("enter")
        await settle(pilot)
        assert "before:" in str(view.query_one("#filter-before-error", Label).render())
        box.value = "1d"
        box.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert view.executions == []  # everything is younger than a day


# ------------------------------------------------------------ errors, palette, help


class Failing:
    """A Backend whose `list_agents` fails; everything else passes through."""

    def __init__(self, inner: LocalBackend, exc: BaseException) -> None:
        self.inner = inner
        self.exc = exc
        self.workspace = inner.workspace

    def __getattr__(self, name: str) -> Any:
        if name == "list_agents":

            def fail(*args: Any, **kwargs: Any) -> Any:
                raise self.exc

            return fail
        return getattr(self.inner, name)


@pytest.mark.parametrize("exc", [RfError("the store is on fire", "call the fire brigade"), RuntimeError("kaboom")])
async def test_a_failing_backend_call_shows_an_error_not_a_crash(backend: LocalBackend, exc: Exception) -> None:
    app = make_app(Failing(backend, exc))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        messages = notifications(app)
        if isinstance(exc, RfError):
            assert any("the store is on fire" in m and "call the fire brigade" in m for m in messages), messages
        else:
            assert any("RuntimeError: kaboom" in m for m in messages), messages
        # still alive and usable
        await pilot.press("5")
        await settle(pilot)
        assert app.current_view == "releases"
        assert app.is_running


async def test_palette_lists_navigation_environment_and_current_actions(backend: LocalBackend) -> None:
    from rf.tui.commands import RfCommands

    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        provider = RfCommands(app.screen)
        titles = [t for t, _, _ in provider._entries()]
        for expected in (
            "Switch to production",
            "Go to Releases",
            "Go to Executions",
            "Help",
            "Deploy agent hello to staging",
            "Promote agent hello to production",
        ):
            assert expected in titles, expected
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"go to rel")
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert app.current_view == "releases"


async def test_help_and_sidebar_navigation(backend: LocalBackend) -> None:
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("e")  # no environment switch behind a dialog
        assert app.env == "staging"
        await pilot.press("escape")
        await pilot.pause()
        await pilot.click("#nav-prompts")
        await settle(pilot)
        assert app.current_view == "prompts"
        for cls in VIEW_CLASSES:  # every view opens (or says it is not available) without an error
            await app.action_show(cls.KEY)
            await settle(pilot)
        assert not [n for n in app._notifications if n.severity == "error"]


# ------------------------------------------------------------ the real `rf ui`


def test_rf_ui_help(tmp_path: Path) -> None:
    from conftest import run_rf

    result = run_rf("ui", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dashboard" in result.stdout and "--env" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_tui_smoke_script_drives_the_real_rf_ui_in_tmux() -> None:
    import subprocess
    import sys

    from conftest import ROOT

    script = ROOT / "scripts" / "tui-smoke"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    env["RF"] = str(Path(sys.executable).parent / "rf")
    result = subprocess.run([str(script)], capture_output=True, text=True, timeout=150, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "tui-smoke: ok" in result.stdout


# ------------------------------------------------------------ connectors and credentials forms


async def test_resource_form_validates_inline_then_saves_in_staging(backend: LocalBackend) -> None:
    from textual.widgets import Input, Label, TextArea

    from rf.tui.views.connectors import ResourceForm

    backend.create_connector("crm", "https://crm.example.com/api")
    app = make_app(backend)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3")
        await settle(pilot)
        await pilot.press("a")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, ResourceForm)
        form.query_one("#slug", Input).value = "get-customer"
        form.query_one("#path", Input).value = "customers/{id}"
        form.query_one("#schema", TextArea).text = '{"type": "object"'
        form.query_one("#mock", TextArea).text = "[1, 2"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "must start with /" in str(form.query_one("#path-error", Label).render())
        assert "not valid JSON" in str(form.query_one("#schema-error", Label).render())
        assert "not valid JSON" in str(form.query_one("#mock-error", Label).render())
        assert backend.get_connector("crm").resources == []  # nothing saved
        form.query_one("#path", Input).value = "/customers/{id}"
        form.query_one("#schema", TextArea).text = '{"type": "object"}'
        form.query_one("#mock", TextArea).text = '{"id": 1}'
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, ResourceForm)
        [resource] = backend.get_connector("crm").resources
        assert (resource.slug, resource.path, resource.mock_response) == ("get-customer", "/customers/{id}", {"id": 1})
        assert backend.release_items()[0].kind == "connector"  # production gets it by publishing


async def test_credential_form_masks_the_value_and_warns_about_production(backend: LocalBackend) -> None:
    from textual.widgets import Input, Static

    from rf.tui.views.credentials import CredentialForm

    backend.set_credential("crm-token", "old-secret")
    backend.create_connector("crm", "https://crm.example.com/api", auth="bearer", credential="crm-token")
    backend.publish_connector("crm", "ada")
    app = make_app(backend, start_view="credentials")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert "crm-token" in screen_text(app) and "old-secret" not in screen_text(app)
        await pilot.press("o")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, CredentialForm)
        value = form.query_one("#value", Input)
        assert value.password
        impact = str(form.query_one("#impact", Static).render())
        assert "affects production at once" in impact and "connector crm (production)" in impact
        await pilot.press(*"new-secret", "enter")
        await settle(pilot)
        assert not isinstance(app.screen, CredentialForm)
        assert "new-secret" not in screen_text(app)
        assert backend.services.credential_secret("crm-token") == "new-secret"


# ------------------------------------------------------------ rf ui's embedded server


def test_embedded_server_opens_the_store_first_when_the_server_can_take_services(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With start_in_thread(..., services=...) the dashboard reads the store before the web stack starts."""
    import threading

    import rf.server.serve as serve
    from rf.tui.launch import EmbeddedServer

    ws = init_workspace(tmp_path / "ws")
    started: list[Any] = []
    stopped = threading.Event()

    class FakeRunning:
        url = "http://127.0.0.1:9"

        def __init__(self, services: Any) -> None:
            self.services = services

        def stop(self) -> None:
            self.services.close()
            self.services.store.close()
            stopped.set()

    def fake_start(ws: Any, *, host: str | None = None, port: int | None = None, services: Any = None) -> Any:
        started.append(services)
        return FakeRunning(services)

    monkeypatch.setattr(serve, "start_in_thread", fake_start)
    server = EmbeddedServer(ws)
    assert server.list_agents() == []  # the store answers before the HTTP server starts
    assert started == []
    urls: list[str | None] = []
    server.when_ready(lambda s: urls.append(s.url))
    server.start_http()
    assert server._served.wait(10)
    assert urls == ["http://127.0.0.1:9"] and started and started[0] is server.wait().services
    server.close()
    assert stopped.is_set()


@pytest.mark.parametrize("table_class", ["Table", "DataTable"])
async def test_a_header_painted_before_the_columns_are_measured_is_repainted(table_class: str) -> None:
    """Textual's DataTable caches rendered cells without their width: a header painted between
    adding rows and the idle pass that measures them kept its old, narrower columns over rows drawn
    with the new ones (seen as a rare snapshot failure). rf's Table repaints it; the plain
    DataTable is checked too, so this test notices when Textual fixes it upstream."""
    from textual import events
    from textual.app import App, ComposeResult
    from textual.widgets import DataTable

    from rf.tui.widgets import Table

    cls = Table if table_class == "Table" else DataTable

    class One(App[None]):
        def compose(self) -> ComposeResult:
            yield cls(id="t")

    async with One().run_test(size=(80, 10)) as pilot:
        table = pilot.app.query_one("#t", DataTable)
        table.add_columns("id", "status")
        await pilot.pause()
        table.add_rows([("ex_" + "0" * 24, "succeeded")])
        table.render_line(0)  # a paint before the idle pass that measures the new row...
        await table._on_idle(events.Idle())  # ...that pass...
        header, row = table.render_line(0).text, table.render_line(1).text  # ...and a paint before the Resize it posts
        aligned = header.index("status") == row.index("succeeded")
        assert aligned is (table_class == "Table"), (header, row)


def test_every_execution_status_is_styled_the_same_on_every_screen() -> None:
    """The Agents view's recent executions and the Executions view share one rendering:
    running and interrupted are marked, not plain words."""
    from rf.tui import render
    from rf.tui.views import executions

    for status in ("succeeded", "failed", "running", "interrupted"):
        text = render.status_text(status)
        assert text.style and status in text.plain, status
        assert executions.status_text(status) == text


def test_the_dashboards_server_log_is_bounded_and_summarises_floods(tmp_path: Path) -> None:
    """``rf ui`` sends uvicorn's and rf's server logs to ``.rf/ui-server.log``: a flood of one
    cause is summarised (RepeatFilter) and the file rolls over at UI_LOG_BYTES (one older kept)."""
    import logging

    from rf.tui import launch

    root = tmp_path / "w"
    init_workspace(root)
    ws = load_workspace(root)
    saved = {name: (logging.getLogger(name).handlers, logging.getLogger(name).propagate)
             for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "rf.server", "litestar")}
    try:
        launch._quiet_server_logs(ws)
        log = logging.getLogger("uvicorn.error")
        for _ in range(5000):
            log.error("accept failed: [Errno 24] Too many open files")
        path = ws.state_dir / "ui-server.log"
        text = path.read_text()
        assert text.count("Too many open files") < 50, "a flood is summarised, not written 5000 times"
        big = "x" * 2000
        for i in range(launch.UI_LOG_BYTES // 2000 + 200):
            log.warning("distinct %d %s", i, big)  # digits are blanked: one cause, so vary the text
            log.warning(f"cause-{chr(65 + i % 26)}{chr(65 + i // 26 % 26)}{chr(65 + i // 676 % 26)} {big}")
        files = sorted(p.name for p in ws.state_dir.iterdir() if p.name.startswith("ui-server.log"))
        assert files == ["ui-server.log", "ui-server.log.1"]
        assert path.stat().st_size <= launch.UI_LOG_BYTES + 10_000
    finally:
        for name, (handlers, propagate) in saved.items():
            for h in logging.getLogger(name).handlers:
                h.close()
            logging.getLogger(name).handlers, logging.getLogger(name).propagate = handlers, propagate
