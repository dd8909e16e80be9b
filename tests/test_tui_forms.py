"""Pilot tests of the dashboard's staging forms: new connectors, triggers, KB search/upload, data queries."""

from __future__ import annotations

from pathlib import Path

from test_tui import SIZE, anyio_backend, backend, make_app, notifications, pytestmark, screen_text, settle, template
from textual.widgets import DataTable, Input, Label, Select, Static, TextArea

from rf.client import LocalBackend
from rf.tui.modals import FormModal
from rf.tui.views.connectors import ConnectorForm, ConnectorsView
from rf.tui.views.others import (
    DataQueryModal,
    DataSourceForm,
    DataSourcesView,
    KBCreateForm,
    KBSearchModal,
    KBUploadModal,
    KnowledgeView,
    SecretModal,
    TriggerForm,
    TriggersView,
)

__all__ = ["anyio_backend", "backend", "pytestmark", "template"]  # the fixtures and marks of test_tui


def error(form: FormModal, field: str) -> str:
    return str(form.query_one(f"#{field}-error", Label).render())


async def test_new_connector_form_validates_inline_then_lists_it(backend: LocalBackend) -> None:
    app = make_app(backend, start_view="connectors")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.query_one(ConnectorsView).check_action("new_connector", ()) is True
        assert "New connector" in [c.title for c in app.query_one(ConnectorsView).commands()]
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, ConnectorForm)
        form.query_one("#base-url", Input).value = "ftp://crm.example.com"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "required" in error(form, "slug") and "http" in error(form, "base-url")
        form.query_one("#slug", Input).value = "Bad Slug!"
        form.query_one("#base-url", Input).value = "https://crm.example.com/api"
        form.query_one("#auth", Select).value = "bearer"
        form.query_one("#credential", Input).value = "crm-token"
        form.query_one("#timeout", Input).value = "12"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, ConnectorForm) and error(form, "slug")  # the service's message, inline
        form.query_one("#slug", Input).value = "crm"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "unknown credential" in error(form, "credential")
        backend.set_credential("crm-token", "s3cret")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, ConnectorForm), [str(x.render()) for x in form.query(".field-error")]
        c = backend.get_connector("crm")
        assert (c.base_url, c.auth, c.credential, c.timeout_s) == (
            "https://crm.example.com/api",
            "bearer",
            "crm-token",
            12,
        )
        assert "crm" in screen_text(app) and app.query_one(ConnectorsView).selected().slug == "crm"


async def test_new_triggers_schedule_and_webhook_and_a_staged_production_copy(backend: LocalBackend) -> None:
    app = make_app(backend, start_view="triggers")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, TriggerForm)
        form.query_one("#agent", Input).value = "hello"
        form.query_one("#input", TextArea).text = '{"name": '
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "not valid JSON" in error(form, "input") and "cron" in error(form, "spec")
        form.query_one("#spec", Input).value = "*/5 * * * *"
        form.query_one("#input", TextArea).text = '{"name": "Ada"}'
        form.query_one("#name", Input).value = "every-5"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, TriggerForm)
        [t] = backend.list_triggers("staging")
        assert (t.name, t.kind, t.schedule, t.input) == ("every-5", "schedule", "*/5 * * * *", {"name": "Ada"})
        assert "every-5" in screen_text(app)

        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, TriggerForm)
        form.query_one("#kind", Select).value = "webhook"
        form.query_one("#name", Input).value = "hook"
        await pilot.press("ctrl+s")
        await settle(pilot)
        modal = app.screen
        assert isinstance(modal, SecretModal) and len(modal.secret) > 10
        assert "shown only now" in screen_text(app) and modal.secret in screen_text(app)
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, SecretModal)
        assert {t.name for t in backend.list_triggers("staging")} == {"every-5", "hook"}

        view = app.query_one(TriggersView)
        view.place = t.id
        await pilot.press("c")
        await settle(pilot)
        [copy] = backend.list_triggers("production")
        assert copy.name == "every-5" and not copy.live
        assert any(i.kind == "trigger" for i in backend.release_items())
        await pilot.press("5")  # Releases lists the staged copy
        await settle(pilot)
        assert app.current_view == "releases" and "every-5" in screen_text(app), screen_text(app)


async def test_kb_upload_through_the_form_then_search_finds_it_first(backend: LocalBackend, tmp_path: Path) -> None:
    backend.create_kb("manuals", chunk_size=50, overlap=0)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "boiler.md").write_text("# Boiler\nTo reset the boiler, hold the red button for ten seconds.\n")
    (docs / "garden.txt").write_text("Water the tomatoes every morning and prune the roses in spring.\n")
    (docs / "photo.png").write_bytes(b"\x89PNG")
    app = make_app(backend, start_view="knowledge")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("u")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, KBUploadModal)
        form.query_one("#path", Input).value = str(tmp_path / "missing")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "does not exist" in error(form, "path")
        form.query_one("#path", Input).value = str(docs)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, KBUploadModal)
        assert any("2 added" in m and "1 skipped" in m for m in notifications(app)), notifications(app)
        assert backend.get_kb("manuals").documents == 2

        await pilot.press("slash")
        await settle(pilot)
        search = app.screen
        assert isinstance(search, KBSearchModal)
        await pilot.press(*"reset the boiler", "enter")
        await settle(pilot)
        assert search.result is not None and search.result.hits[0].path.endswith("boiler.md")
        hits = str(search.query_one("#hits", Static).render())
        assert "boiler.md" in hits and "score" in hits


async def test_data_query_shows_rows_refuses_writes_and_adds_a_file(backend: LocalBackend, tmp_path: Path) -> None:
    csv = tmp_path / "sales.csv"
    csv.write_text("region,amount\nnorth,10\nsouth,20\n")
    app = make_app(backend, start_view="data")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, DataSourceForm)
        form.query_one("#name", Input).value = "sales"
        form.query_one("#path", Input).value = str(tmp_path / "nope.csv")
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, DataSourceForm) and error(form, "path")
        form.query_one("#path", Input).value = str(csv)
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, DataSourceForm)
        assert [s.name for s in backend.list_data_sources()] == ["sales"]

        await pilot.press("slash")
        await settle(pilot)
        query = app.screen
        assert isinstance(query, DataQueryModal)
        query.query_one("#sql", Input).value = "SELECT region, amount FROM sales ORDER BY amount"
        await pilot.press("enter")
        await settle(pilot)
        table = query.query_one("#rows-table", DataTable)
        assert table.row_count == 2 and [str(c) for c in table.get_row_at(1)] == ["south", "20"]
        query.query_one("#sql", Input).value = "INSERT INTO sales VALUES ('east', 5)"
        await pilot.press("enter")
        await settle(pilot)
        assert "read-only" in error(query, "sql")
        assert isinstance(app.screen, DataQueryModal)


async def test_the_new_actions_are_absent_and_refused_in_production(backend: LocalBackend) -> None:
    app = make_app(backend, env="production", start_view="connectors")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key, cls, actions in (
            ("connectors", ConnectorsView, ("new_connector",)),
            ("triggers", TriggersView, ("new_trigger", "stage_production_copy")),
            ("knowledge", KnowledgeView, ("upload", "new_kb")),  # search only reads: allowed
            ("data", DataSourcesView, ("add_source",)),  # queries only read: allowed
        ):
            await app.action_show(key)
            await settle(pilot)
            view = app.view(key)
            assert isinstance(view, cls)
            for action in actions:
                assert action in cls.WRITE_ACTIONS and view.check_action(action, ()) is False
                getattr(view, f"action_{action}")()  # reached some other way: refused
            for press in ("n", "c", "u"):
                await pilot.press(press)
            await pilot.pause()
            assert not isinstance(app.screen, FormModal | SecretModal), key
            footer = screen_text(app).splitlines()[-1]
            assert not any(w in footer for w in ("New", "Stage", "Upload", "Add data")), footer
            assert not [c for c in view.commands() if not c.title.startswith(("Search", "Query"))]
        assert any("read-only" in m for m in notifications(app))


async def test_search_and_query_only_read_so_production_offers_them(backend: LocalBackend) -> None:
    app = make_app(backend, env="production", start_view="knowledge")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key, cls, action in (("knowledge", KnowledgeView, "search"), ("data", DataSourcesView, "query")):
            await app.action_show(key)
            await settle(pilot)
            view = app.view(key)
            assert isinstance(view, cls)
            assert action not in cls.WRITE_ACTIONS and view.check_action(action, ()) is not False


async def test_the_agent_detail_shows_each_environments_trace_mode(backend: LocalBackend) -> None:
    """Under each environment's endpoint in an agent's detail, a line with the trace mode its
    commit runs there (``[trace]`` of agent.toml, through get_agent): none where nothing is deployed."""
    from conftest import HELLO_TOML, write_agent
    from rf.config import snapshot_dir

    ws = backend.services.workspace
    assert ws is not None
    write_agent(ws.root, "quiet", toml=HELLO_TOML + '[trace]\nstaging = "full"\n')
    backend.deploy("quiet", snapshot_dir(ws.agents_dir / "quiet"), "full traces", "ada")
    app = make_app(backend, start_view="agents")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lines = [line.split("▎", 1)[-1].strip(" │") for line in screen_text(app).splitlines()]
        staging = next(i for i, line in enumerate(lines) if "/staging/agents/hello" in line)
        production = next(i for i, line in enumerate(lines) if "/production/agents/hello" in line)
        assert lines[staging + 1] == "trace standard" and lines[production + 1] == "trace standard", lines
        await pilot.press("down")  # quiet: staging only
        await settle(pilot)
        lines = [line.split("▎", 1)[-1].strip(" │") for line in screen_text(app).splitlines()]
        staging = next(i for i, line in enumerate(lines) if "/staging/agents/quiet" in line)
        assert lines[staging + 1] == "trace full" and "/production/agents/quiet" in lines[staging + 2], lines


async def test_releases_arrow_keys_move_the_list_when_it_appears(backend: LocalBackend) -> None:
    """Releases opened with nothing pending, then changes arrive (the poll): the list has the
    focus, so the arrow keys move it at once (the focus once stayed on a hidden widget, the
    diff pane: shift+tab first). A place the user tabbed to is kept across reloads."""
    from textual.containers import VerticalScroll
    from textual.widgets import SelectionList

    from conftest import HELLO_PY, write_agent
    from rf.config import snapshot_dir
    from rf.tui.views.releases import ReleasesView

    backend.promote("hello", "ada")
    backend.promote("quiet", "ada")
    assert backend.release_items() == []
    app = make_app(backend, start_view="releases")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(ReleasesView)
        assert app.focused is view  # nothing listed: the view keeps its keys
        ws = backend.services.workspace
        assert ws is not None
        for name in ("hello", "quiet"):
            write_agent(ws.root, name, HELLO_PY + f"\n# {name} v3\n")
            backend.deploy(name, snapshot_dir(ws.agents_dir / name), "v3", "ada")
        view.reload()
        await settle(pilot)
        items = view.query_one("#release-items", SelectionList)
        assert app.focused is items and items.highlighted == 0 and view.place == "agent:hello"
        await pilot.press("down")
        await settle(pilot)
        assert items.highlighted == 1 and view.place == "agent:quiet"
        await pilot.press("tab")  # to the diff pane, on purpose: a reload keeps it there
        await settle(pilot)
        assert isinstance(app.focused, VerticalScroll)
        view.reload()
        await settle(pilot)
        assert isinstance(app.focused, VerticalScroll)


async def test_new_knowledge_base_form_says_it_is_shared_then_lists_it(backend: LocalBackend) -> None:
    """Staging's Knowledge screen creates a KB (n): what rf kb create takes, checked inline, the
    dialog saying production sees it too (KBs are shared)."""
    app = make_app(backend, start_view="knowledge")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(KnowledgeView)
        assert view.check_action("new_kb", ()) is True
        assert "New knowledge base" in [c.title for c in view.commands()]
        assert "New knowledge base" in screen_text(app).splitlines()[-1]  # the footer
        await pilot.press("n")
        await settle(pilot)
        form = app.screen
        assert isinstance(form, KBCreateForm)
        assert "production agents see this one too" in " ".join(screen_text(app).split())
        assert form.query_one("#embedder", Input).value == "default"
        form.query_one("#chunk-size", Input).value = "lots"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "required" in error(form, "name") and "whole number" in error(form, "chunk-size")
        form.query_one("#name", Input).value = "handbook"
        form.query_one("#chunk-size", Input).value = "10"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert isinstance(app.screen, KBCreateForm) and "between 50 and" in error(form, "chunk-size")
        form.query_one("#name", Input).value = "Bad Name"
        form.query_one("#chunk-size", Input).value = "400"
        form.query_one("#overlap", Input).value = "50"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "invalid knowledge base name" in error(form, "name")
        form.query_one("#name", Input).value = "handbook"
        form.query_one("#embedder", Input).value = "provider:nope:m"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert "nope" in error(form, "embedder")
        form.query_one("#embedder", Input).value = "default"
        form.query_one("#description", Input).value = "the staff handbook"
        await pilot.press("ctrl+s")
        await settle(pilot)
        assert not isinstance(app.screen, KBCreateForm), [str(x.render()) for x in form.query(".field-error")]
        kb = backend.get_kb("handbook")
        assert (kb.embedder, kb.chunk_size, kb.overlap, kb.description) == ("default", 400, 50, "the staff handbook")
        assert view.selected_name() == "handbook" and "handbook" in screen_text(app)
        assert any("production sees it too" in m for m in notifications(app))


async def test_connector_delete_asks_then_deletes_staging_and_stages_production(backend: LocalBackend) -> None:
    from rf.tui.modals import ConfirmModal

    backend.create_connector("crm", "https://crm.example.com/api")
    backend.add_resource("crm", "get", "GET", "/get")
    backend.publish_connector("crm")
    app = make_app(backend, start_view="connectors")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        view = app.query_one(ConnectorsView)
        assert view.selected() is not None and view.selected().slug == "crm"
        await pilot.press("D")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ConfirmModal)
        assert "Delete connector crm from staging?" in screen_text(app)
        assert "Production keeps its instance until you publish its removal" in screen_text(app)
        await pilot.press("escape")  # cancelled: nothing changes
        await settle(pilot)
        assert [c.slug for c in backend.list_connectors("staging")] == ["crm"]
        await pilot.press("D")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert backend.list_connectors("staging") == []
        assert [c.slug for c in backend.list_connectors("production")] == ["crm"]  # production: a release item
        assert [i.summary for i in backend.release_items() if i.kind == "connector"] == [
            "deleted in staging: publishing removes it from production"]
        assert any("Connector crm deleted from staging" in n for n in notifications(app))
        await pilot.press("e")  # production: the action is not offered
        await settle(pilot)
        assert app.env == "production" and view.check_action("delete_connector", ()) is not True


async def test_releases_screen_shows_a_plans_approvals_and_approves_it(template: Path, tmp_path: Path) -> None:
    """[releases] approvals = 1: the Releases screen's publish shows who approved the plan and lets
    a publisher other than its author approve it; once approved, p publishes as usual."""
    import shutil

    from textual.widgets import Button, Static

    from rf.client import open_local
    from rf.config import load_workspace
    from rf.services.users import Actor, call_as
    from rf.tui.modals import ChoiceModal, ConfirmModal

    root = tmp_path / "ws"
    shutil.copytree(template, root, ignore=shutil.ignore_patterns("cache"))
    (root / "rf.toml").write_text((root / "rf.toml").read_text() + "\n[releases]\napprovals = 1\n")
    b = open_local(load_workspace(root))
    try:
        ann = Actor("ann", "publisher")
        plan = call_as(ann, b.services.plan_release, None, all=True)  # ann made this plan: she cannot approve it
        app = make_app(b, start_view="releases")
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("p")
            await settle(pilot)
            dialog = app.screen
            assert isinstance(dialog, ChoiceModal), type(dialog)
            title = str(dialog.query_one("#dialog-title", Static).render())
            assert title == f"Plan {plan.id} needs 1 approval(s)"
            assert "Approvals: 0 of 1 (nobody yet)" in screen_text(app) and "made by ann" in screen_text(app)
            dialog.query_one("#choice-approve", Button).press()  # the owner (admin) is not its author
            await settle(pilot)
            assert [a.approver for a in b.plan_approvals(plan.id).approvals] != []
            assert any(f"Approved plan {plan.id}: 1 of 1" in n for n in notifications(app))
            await pilot.press("p")  # approved: the usual confirmation, then the publish
            await settle(pilot)
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("y")
            await settle(pilot)
            assert b.release_items() == [] and b.list_releases()[0].plan_id == plan.id
    finally:
        b.close()
