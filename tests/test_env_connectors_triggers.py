"""Production changes only through recorded releases — connector settings per environment,
and live production triggers paused / resumed / edited by a (one-item) release.

Through the real CLI against a real `rf serve` where the workflow is a user's, plus the
store migration and the dashboard's production Triggers dialog. Each test runs `rf` as a real
subprocess (run_rf) for a few commands, the rest through the same entry point in-process
(run_rf_here: same output and exit codes, without an interpreter start each)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_tui import SIZE, anyio_backend, backend, make_app, notifications, pytestmark, settle, template
from textual.widgets import Button, Static

from conftest import ServerProc, run_rf, run_rf_here, start_server
from rf.client import LocalBackend, open_local
from rf.ids import parse_iso
from rf.services.scheduler import Scheduler
from rf.store.migrations import MIGRATIONS
from rf.tui.views.others import TriggersView

__all__ = ["anyio_backend", "backend", "pytestmark", "template"]  # fixtures and marks of test_tui

LIVE, SANDBOX, LIVE2 = "https://crm.example.com/live", "https://crm.example.com/sandbox", "https://crm2.example.com/v2"


def rf_ok(*args: str, cwd: Path) -> str:
    r = run_rf_here(*args, cwd=cwd)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout + r.stderr


def rf_json(*args: str, cwd: Path, run: Any = run_rf_here) -> Any:
    r = run(*args, "--json", cwd=cwd)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


def connector(root: Path, env: str) -> dict[str, Any]:
    return rf_json("connectors", "show", "crm", "--env", env, cwd=root)  # type: ignore[no-any-return]


def pending(root: Path, run: Any = run_rf_here) -> dict[str, dict[str, Any]]:
    return {f"{i['kind']}:{i['name']}": i for i in rf_json("releases", cwd=root, run=run)}


def published_crm(root: Path) -> None:
    """crm: live URL, bearer credential, one resource, published; then staging moves to the sandbox."""
    r = run_rf("credentials", "set", "crm-token", "--from-stdin", "--yes", cwd=root, input="s3cret-value")
    assert r.returncode == 0, r.stderr
    rf_ok("connectors", "create", "crm", "--base-url", LIVE, "--auth", "bearer", "--credential", "crm-token",
          cwd=root)
    rf_ok("connectors", "resources", "add", "crm", "get-customer", "--path", "/customers/{id}", cwd=root)
    rf_ok("connectors", "publish", "crm", "--yes", cwd=root)
    rf_ok("connectors", "edit", "crm", "--base-url", SANDBOX, "--auth", "none", "--timeout", "5", cwd=root)


# ---------------------------------------------------------------- connectors


def test_a_resource_publish_never_carries_staging_settings(ws: Any, server: ServerProc) -> None:
    root = ws.root
    published_crm(root)
    rf_ok("connectors", "resources", "add", "crm", "list-orders", "--path", "/orders", cwd=root)
    assert list(pending(root)) == ["connector:crm"]  # the resource; staging's own settings are no release item
    out = rf_ok("connectors", "publish", "crm", "--yes", cwd=root)
    assert "+1 resource" in out
    prod, staging = connector(root, "production"), connector(root, "staging")
    assert {r["slug"] for r in prod["resources"]} == {"get-customer", "list-orders"}
    assert (prod["base_url"], prod["auth"], prod["credential"], prod["timeout_s"]) == (LIVE, "bearer", "crm-token", 30)
    assert (staging["base_url"], staging["auth"], staging["credential"], staging["timeout_s"]) == (
        SANDBOX, "none", None, 5)
    assert pending(root) == {}
    # show and diff put both environments' settings side by side
    shown = rf_ok("connectors", "show", "crm", cwd=root)
    assert "settings per environment" in shown and SANDBOX in shown and LIVE in shown
    # an edit aimed at production says how to do it
    r = run_rf("connectors", "edit", "crm", "--env", "production", "--base-url", LIVE2, cwd=root)
    assert r.returncode == 1 and "production is read-only" in r.stderr and "--for production" in r.stderr


def test_production_settings_are_prepared_released_and_rolled_back(ws: Any, server: ServerProc) -> None:
    root = ws.root
    published_crm(root)
    out = rf_ok("connectors", "edit", "crm", "--for", "production", "--base-url", LIVE2, "--timeout", "12",
                cwd=root)
    assert "prepared" in out and "rf releases publish connector:crm@production" in out
    # nothing changed in production yet; the prepared settings are one release item, with a diff
    assert connector(root, "production")["base_url"] == LIVE
    items = pending(root)
    assert list(items) == ["connector:crm@production"]
    item = items["connector:crm@production"]
    assert item["summary"].startswith("crm: production settings: base URL " + LIVE + " → " + LIVE2)
    diff = rf_ok("releases", "diff", "connector:crm@production", cwd=root)
    assert f"~ base URL: {LIVE} → {LIVE2}" in diff and "~ timeout: 30.0 → 12.0" in diff
    assert "prepared" in rf_ok("connectors", "show", "crm", cwd=root)
    # staging's settings are untouched by preparing production's
    assert connector(root, "staging")["base_url"] == SANDBOX

    out = rf_ok("releases", "publish", "connector:crm@production", "--yes", "-m", "move to crm2", cwd=root)
    prod = connector(root, "production")
    assert (prod["base_url"], prod["timeout_s"], prod["auth"], prod["credential"]) == (LIVE2, 12, "bearer",
                                                                                        "crm-token")
    assert connector(root, "staging")["base_url"] == SANDBOX
    assert pending(root) == {}
    [release, *_] = rf_json("releases", "history", cwd=root)
    assert [(i["kind"], i["name"]) for i in release["items"]] == [("connector", "crm@production")]

    # rollback restores production's previous settings (the prepared ones stay, pending again)
    rf_ok("releases", "rollback", release["id"], "--yes", cwd=root)
    prod = connector(root, "production")
    assert (prod["base_url"], prod["timeout_s"]) == (LIVE, 30)
    assert list(pending(root)) == ["connector:crm@production"]
    # ... and a later resource publish still keeps production's own settings
    rf_ok("connectors", "resources", "add", "crm", "ping", "--path", "/ping", cwd=root)
    rf_ok("releases", "publish", "connector:crm", "--yes", cwd=root)
    assert connector(root, "production")["base_url"] == LIVE


def test_a_new_connector_takes_prepared_settings_or_says_it_copies_staging(ws: Any, server: ServerProc) -> None:
    root = ws.root
    r = run_rf("connectors", "edit", "erp", "--for", "production", "--base-url", LIVE2, cwd=root)
    assert r.returncode == 1 and "rf connectors create erp" in r.stderr  # missing: says what to do
    rf_ok("connectors", "create", "erp", "--base-url", SANDBOX, cwd=root)
    rf_ok("connectors", "resources", "add", "erp", "get", "--path", "/x", cwd=root)
    assert "copied from staging, none were prepared" in pending(root)["connector:erp"]["summary"]
    out = rf_ok("connectors", "edit", "erp", "--for", "production", "--base-url", LIVE2, cwd=root)
    assert "its first publish uses these settings" in out
    summary = pending(root)["connector:erp"]["summary"]
    assert "production settings as prepared" in summary and LIVE2 in summary
    rf_ok("connectors", "publish", "erp", "--yes", cwd=root)
    assert connector_env(root, "erp", "production") == LIVE2
    assert connector_env(root, "erp", "staging") == SANDBOX


def connector_env(root: Path, slug: str, env: str) -> str:
    return str(rf_json("connectors", "show", slug, "--env", env, cwd=root)["base_url"])


def test_migration_keeps_production_settings(ws: Any) -> None:
    """A store written before settings were per environment: production keeps its own."""
    version = next(n for n, steps in enumerate(MIGRATIONS) if any("connector_prepared_settings" in s for s in steps))
    con = duckdb.connect(str(ws.db_path))
    for steps in MIGRATIONS[:version]:
        for statement in steps:
            con.execute(statement)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)])
    now = dt.datetime(2026, 1, 1)
    for env, url, timeout in (("staging", SANDBOX, 5.0), ("production", LIVE, 30.0)):
        con.execute("INSERT INTO connectors VALUES (?, 'crm', 'http', ?, 'none', NULL, NULL, NULL, '{}', ?, 2, false, "
                    "?, ?)", [env, url, timeout, now, now])
        con.execute("INSERT INTO connector_resources VALUES (?, 'crm', 'get', 'get', '', 'GET', '/x', NULL, NULL)",
                    [env])
    con.close()

    # opening migrates (in a real `rf` process): production's settings are the prepared ones, nothing is pending
    assert pending(ws.root, run=run_rf) == {}
    assert connector(ws.root, "production")["base_url"] == LIVE
    view = rf_json("connectors", "show", "crm", cwd=ws.root)["settings"]
    assert view["prepared"]["base_url"] == LIVE and not view["pending"]
    # a resource publish after the migration keeps production's URL and timeout
    rf_ok("connectors", "resources", "add", "crm", "list", "--path", "/list", cwd=ws.root)
    assert list(pending(ws.root)) == ["connector:crm"]
    rf_ok("connectors", "publish", "crm", "--yes", cwd=ws.root)
    prod = connector(ws.root, "production")
    assert (prod["base_url"], prod["timeout_s"], len(prod["resources"])) == (LIVE, 30, 2)


# ---------------------------------------------------------------- live production triggers


def live_production_trigger(root: Path) -> tuple[str, str]:
    """(staging id, production id) of a schedule trigger published to production."""
    rf_ok("agents", "deploy", "hello", cwd=root)
    rf_ok("agents", "promote", "hello", "--yes", cwd=root)
    staging = rf_json("triggers", "create", "--agent", "hello", "--schedule", "* * * * *", "--input",
                      '{"name": "cron"}', cwd=root)["id"]
    production = rf_json("triggers", "duplicate", staging, "--env", "production", cwd=root)["id"]
    rf_ok("releases", "publish", f"trigger:{production}", "--yes", cwd=root)
    return staging, production


@pytest.fixture
def live_trigger(ws: Any) -> Iterator[tuple[ServerProc, str, str]]:
    srv = start_server(ws.root)
    try:
        staging, production = live_production_trigger(ws.root)
        yield srv, staging, production
    finally:
        srv.stop()


def test_pause_now_stops_a_production_trigger_as_a_recorded_release(ws: Any,
                                                                     live_trigger: tuple[ServerProc, str, str]) -> None:
    srv, _, tid = live_trigger
    root = ws.root
    assert run_rf("triggers", "fire", tid, cwd=root).returncode == 0  # live: it fires
    # a direct production edit is refused, and says how
    r = run_rf("triggers", "disable", tid, cwd=root)
    assert r.returncode == 1 and "production is read-only" in r.stderr
    assert f"rf triggers pause {tid} --env production" in r.stderr and "--now" in r.stderr
    r = run_rf_here("triggers", "pause", tid, cwd=root)
    assert r.returncode == 1 and "--env production" in r.stderr and "--now" in r.stderr
    r = run_rf_here("triggers", "pause", tid, "--env", "production", "--now", cwd=root)
    assert r.returncode == 2 and "--yes" in r.stderr  # publishing now changes production: confirm
    out = rf_ok("triggers", "pause", tid, "--env", "production", "--now", "--yes", cwd=root)
    assert "published to production" in out and "pause" in out
    assert rf_json("triggers", "show", tid, cwd=root)["enabled"] is False
    r = run_rf_here("triggers", "fire", tid, cwd=root)
    assert r.returncode == 1 and "paused" in r.stderr and "rf triggers resume" in r.stderr
    [release, *_] = rf_json("releases", "history", cwd=root)
    assert [(i["kind"], i["name"]) for i in release["items"]] == [("trigger", tid)]
    item = release["items"][0]
    assert item["summary"].endswith("(production): pause")
    assert item["before"]["enabled"] is True and item["after"]["enabled"] is False
    assert pending(root) == {}
    executions = rf_json("executions", "list", "--env", "production", cwd=root)
    assert [e["source"] for e in executions] == [f"trigger:{tid}"]  # the one run before the pause
    srv.stop()

    # the scheduler never fires it while paused; a resume counts slots from then (no missed slot fires)
    b = open_local(ws)
    try:
        sched = Scheduler(b.services)
        paused_at = parse_iso(b.get_trigger(tid).updated_at)
        assert tid not in sched.tick(paused_at + dt.timedelta(minutes=5))
        result = b.edit_trigger(tid, env="production", enabled=True, now=True, author="ada")
        assert result.release_id and b.get_trigger(tid).enabled
        resumed = parse_iso(b.get_trigger(tid).last_scheduled_at or "")
        assert tid not in sched.tick(resumed)
        assert tid in sched.tick(resumed + dt.timedelta(minutes=1, seconds=1))
        sched.wait_idle()
        sched.stop()
    finally:
        b.close()


def test_a_staged_pause_changes_nothing_until_published(ws: Any, live_trigger: tuple[ServerProc, str, str]) -> None:
    _, staging_id, tid = live_trigger
    root = ws.root
    out = rf_ok("triggers", "pause", tid, "--env", "production", cwd=root)
    assert "staged for production" in out and f"rf releases publish trigger:{tid}" in out
    items = pending(root)
    assert list(items) == [f"trigger:{tid}"]
    assert items[f"trigger:{tid}"]["summary"] == "trigger hello-schedule (production): pause"
    assert items[f"trigger:{tid}"]["before"]["enabled"] is True and items[f"trigger:{tid}"]["after"]["enabled"] is False
    shown = rf_json("triggers", "show", tid, cwd=root)
    assert shown["enabled"] is True and shown["staged_summary"] == "pause"
    assert run_rf("triggers", "fire", tid, cwd=root).returncode == 0  # still live and firing
    # an edit on top is the same item, before → after
    rf_ok("triggers", "edit", tid, "--env", "production", "--schedule", "*/10 * * * *", cwd=root)
    summary = pending(root)[f"trigger:{tid}"]["summary"]
    assert summary == "trigger hello-schedule (production): pause, schedule * * * * * → */10 * * * *"
    # staging triggers are edited directly (no release)
    rf_ok("triggers", "edit", staging_id, "--schedule", "0 * * * *", "--input", '{"name": "x"}', cwd=root)
    assert rf_json("triggers", "show", staging_id, cwd=root)["schedule"] == "0 * * * *"
    assert list(pending(root)) == [f"trigger:{tid}"]

    rf_ok("releases", "publish", f"trigger:{tid}", "--yes", cwd=root)
    shown = rf_json("triggers", "show", tid, cwd=root)
    assert (shown["enabled"], shown["schedule"], shown["staged_change"]) == (False, "*/10 * * * *", None)
    assert run_rf_here("triggers", "fire", tid, cwd=root).returncode == 1
    assert pending(root) == {}


def test_deleting_a_live_production_trigger_is_a_release_item(ws: Any,
                                                              live_trigger: tuple[ServerProc, str, str]) -> None:
    _, staging_id, tid = live_trigger
    root = ws.root
    out = rf_ok("triggers", "delete", tid, cwd=root)  # staging the removal changes nothing: no confirmation
    assert "staged for production: remove trigger hello-schedule" in out and f"trigger:{tid}" in out
    item = pending(root)[f"trigger:{tid}"]
    assert item["summary"] == "trigger hello-schedule (production): remove from production"
    assert item["before"]["schedule"] == "* * * * *" and item["after"] == {"removed": True}
    shown = rf_json("triggers", "show", tid, cwd=root)
    assert shown["live"] and shown["staged_summary"] == "remove from production"
    assert run_rf("triggers", "fire", tid, cwd=root).returncode == 0  # still live until published
    diff = rf_ok("releases", "diff", f"trigger:{tid}", cwd=root)
    assert "publishing removes this trigger from production" in diff and "- schedule: \"* * * * *\"" in diff
    assert "{\"removed\"" not in diff  # a reviewer reads fields, not raw JSON
    # a change on top replaces the staged removal; resuming an enabled trigger cancels it
    rf_ok("triggers", "resume", tid, "--env", "production", cwd=root)
    assert pending(root) == {} and rf_json("triggers", "show", tid, cwd=root)["staged_change"] is None

    rf_ok("triggers", "delete", tid, "--env", "production", cwd=root)
    published = rf_json("releases", "publish", f"trigger:{tid}", "--yes", cwd=root)
    assert [(i["kind"], i["name"]) for i in published["items"]] == [("trigger", tid)]
    assert [t["id"] for t in rf_json("triggers", "list", "--env", "production", cwd=root)] == []
    r = run_rf_here("triggers", "show", tid, cwd=root)
    assert r.returncode == 1 and "no trigger" in r.stderr
    assert pending(root) == {}
    shown_release = rf_ok("releases", "show", published["id"], cwd=root)
    assert "(removed)" in shown_release and "{" not in shown_release.split("trigger", 1)[1].split("\n")[0]

    # rollback restores it, as it was, and it fires again
    rf_ok("releases", "rollback", published["id"], "--yes", cwd=root)
    back = rf_json("triggers", "show", tid, cwd=root)
    assert (back["live"], back["env"], back["schedule"], back["input"]) == (True, "production", "* * * * *",
                                                                          {"name": "cron"})
    assert run_rf_here("triggers", "fire", tid, cwd=root).returncode == 0
    # staging's trigger was never touched
    assert rf_json("triggers", "show", staging_id, cwd=root)["env"] == "staging"


def test_delete_now_removes_a_production_trigger_as_a_one_item_release(ws: Any,
                                                                       live_trigger: tuple[ServerProc, str, str]) -> None:
    _, staging_id, tid = live_trigger
    root = ws.root
    r = run_rf("triggers", "delete", tid, "--now", cwd=root)  # no terminal: --now needs --yes
    assert r.returncode == 2 and "--yes" in r.stderr
    assert rf_json("triggers", "show", tid, cwd=root)["live"]
    out = rf_ok("triggers", "delete", tid, "--now", "--yes", "-m", "stop the cron", cwd=root)
    assert "removed from production" in out and "rf releases rollback" in out
    [release, *_] = rf_json("releases", "history", cwd=root)
    assert release["message"] == "stop the cron" and [i["name"] for i in release["items"]] == [tid]
    assert rf_json("triggers", "list", "--env", "production", cwd=root) == []
    # a staging delete asks (no terminal: --yes), and --now is only for production
    r = run_rf_here("triggers", "delete", staging_id, cwd=root)
    assert r.returncode == 2 and "--yes" in r.stderr
    r = run_rf_here("triggers", "delete", staging_id, "--now", "--yes", cwd=root)
    assert r.returncode == 2 and "--now applies to live production triggers" in r.stderr
    rf_ok("triggers", "delete", staging_id, "--yes", cwd=root)
    assert rf_json("triggers", "list", cwd=root) == []


# ---------------------------------------------------------------- the dashboard


async def test_production_triggers_screen_pauses_through_a_confirm_dialog(backend: LocalBackend) -> None:
    from rf.tui.modals import ChoiceModal

    t = backend.create_trigger("hello", "schedule", schedule="* * * * *", name="nightly")
    copy = backend.duplicate_trigger(t.id, "production")
    backend.publish_release([f"trigger:{copy.id}"])
    app = make_app(backend, start_view="triggers")
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("e")  # production
        await settle(pilot)
        view = app.query_one(TriggersView)
        assert app.env == "production" and [i.id for i in view.items] == [copy.id]
        assert view.check_action("pause_resume", ()) is True and view.check_action("new_trigger", ()) is False
        view.place = copy.id
        await pilot.press("p")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ChoiceModal)
        title = str(dialog.query_one("#dialog-title", Static).render())
        body = str(dialog.query_one("#dialog-body Static", Static).render())
        assert title == "Pause trigger nightly in production?"
        assert "trigger nightly (production): pause" in body and "enabled: enabled → paused" in body
        dialog.query_one("#choice-stage", Button).press()  # stage it: a release item, production unchanged
        await settle(pilot)
        assert not isinstance(app.screen, ChoiceModal)
        assert backend.get_trigger(copy.id).enabled
        assert [i.name for i in backend.release_items() if i.kind == "trigger"] == [copy.id]

        await pilot.press("p")
        await settle(pilot)
        dialog = app.screen
        assert isinstance(dialog, ChoiceModal)
        dialog.query_one("#choice-now", Button).press()  # the emergency stop: a one-item release, now
        await settle(pilot)
        assert not backend.get_trigger(copy.id).enabled
        [release, *_] = backend.list_releases()
        assert [(i.kind, i.name) for i in release.items] == [("trigger", copy.id)]
        assert [i for i in backend.release_items() if i.kind == "trigger"] == []
        assert any("published now" in n for n in notifications(app))
