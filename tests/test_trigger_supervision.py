"""Supervised triggers: a watcher or the scheduler's tick loop that fails is started again
with a growing delay, and its last error shows on the trigger (rf triggers show/list,
the dashboard) — in-process Schedulers over a real store, and a real ``rf serve``."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_tui import SIZE, anyio_backend, backend, make_app, screen_text, settle, template

from conftest import HELLO_TOML, run_rf, run_rf_here, start_server, write_agent
from rf.client import open_local
from rf.config import snapshot_dir
from rf.ids import utcnow
from rf.models import Trigger
from rf.services.scheduler import Backoff, Scheduler

__all__ = ["anyio_backend", "backend", "template"]  # test_tui's fixtures (the dashboard test)

ECHO_PY = "def handle(input, ctx):\n    return input\n"
#: Small delays, so a test sees several restarts in well under a second.
FAST = Backoff(first_s=0.1, cap_s=0.4, healthy_s=60)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 15, every: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(every)


@pytest.fixture
def b(ws: Any) -> Iterator[Any]:
    write_agent(ws.root, "echo", ECHO_PY, HELLO_TOML)
    backend = open_local(ws)
    backend.deploy("echo", snapshot_dir(ws.root / "agents" / "echo"), "v1", "ada")
    backend.deploy("hello", snapshot_dir(ws.root / "agents" / "hello"), "v1", "ada")
    yield backend
    backend.close()


def fired_paths(b: Any, trigger_id: str) -> list[str]:
    """The changed paths passed to every execution of the watch trigger so far."""
    return [c["path"] for ex in b.list_executions("staging", source=f"trigger:{trigger_id}", limit=1000)
            for c in (ex.input or {}).get("changes", [])]


def write_until_fired(sched: Scheduler, b: Any, t: Trigger, directory: Path, name: str) -> None:
    """Write ``name`` into ``directory`` (again every half second: the watcher may still be starting)
    until an execution of ``t`` lists it."""
    def fired() -> bool:
        (directory / name).write_text(str(time.monotonic()))
        sched.wait_idle()
        return any(p.endswith(name) for p in fired_paths(b, t.id))

    wait_for(f"{name} to fire {t.id}", fired, every=0.5)


def test_deleted_watch_directory_is_retried_until_it_is_back_then_fires_again(ws: Any, b: Any) -> None:
    # watchfiles keeps watching a deleted directory forever and reports nothing, even once it is
    # created again: the watcher must notice, fail visibly, and retry until the path is back.
    inbox = ws.root / "inbox"
    inbox.mkdir()
    t = b.create_trigger("echo", "watch", watch_path="inbox")
    sched = Scheduler(b.services, watch_debounce_ms=50, backoff=FAST)
    sched.start(interval_s=0.05)
    try:
        write_until_fired(sched, b, t, inbox, "before.txt")
        assert b.get_trigger(t.id).error is None

        shutil.rmtree(inbox)
        failing = wait_for("the watcher's error", lambda: (x := b.get_trigger(t.id)).failure() and x)
        assert failing.error in ("the watched path was deleted", "the watched path does not exist")
        assert failing.error_at and failing.retry_at
        assert failing.failure().startswith(f"watcher failed: {failing.error} (retrying ")
        # It keeps retrying (and failing) while the directory is missing: the restarts count up.
        wait_for("more restarts", lambda: b.get_trigger(t.id).restarts >= 2)
        # (read between two runs: a read that lands on a retry sees it running, the next one failing)
        wait_for("the failure again after the retries", lambda: b.get_trigger(t.id).failure())

        inbox.mkdir()
        wait_for("the watcher to run again", lambda: not b.get_trigger(t.id).retry_at)
        write_until_fired(sched, b, t, inbox, "after.txt")
    finally:
        sched.stop()
    again = b.get_trigger(t.id)
    assert again.failure() == "" and again.retry_at is None
    assert again.error == "the watched path does not exist" and again.restarts >= 2  # kept: the last error


def test_crashing_watcher_restarts_with_growing_delays_and_a_redacted_error(
        ws: Any, b: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import watchfiles

    real_watch = watchfiles.watch
    calls: list[float] = []

    def flaky_watch(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        if len(calls) <= 3:
            raise RuntimeError("inotify gave up (url https://x.test/?token=s3cr3t-t0ken)")
        return real_watch(*args, **kwargs)

    monkeypatch.setattr(watchfiles, "watch", flaky_watch)
    inbox = ws.root / "inbox"
    inbox.mkdir()
    t = b.create_trigger("echo", "watch", watch_path="inbox")
    sched = Scheduler(b.services, watch_debounce_ms=50, backoff=FAST)
    sched.start(interval_s=0.05)
    try:
        wait_for("the fourth start", lambda: len(calls) >= 4)
        write_until_fired(sched, b, t, inbox, "a.txt")
    finally:
        sched.stop()
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    # 0.1 s, 0.2 s, 0.4 s (the cap): each wait at least the backoff's delay
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2 and gaps[2] >= 0.4, gaps
    after = b.get_trigger(t.id)
    assert after.restarts == 3 and after.retry_at is None
    assert after.error is not None and after.error.startswith("RuntimeError: inotify gave up")
    assert "s3cr3t" not in after.error and "[REDACTED]" in after.error


def test_backoff_doubles_up_to_its_cap_and_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [Backoff().delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert Backoff().delay(10_000) == 60  # no overflow after days of failures
    monkeypatch.setenv("RF_TRIGGER_RETRY_S", "0.2,0.5")
    assert Backoff.from_env() == Backoff(first_s=0.2, cap_s=0.5)
    monkeypatch.setenv("RF_TRIGGER_RETRY_S", "soon")
    assert Backoff.from_env() == Backoff()


def test_failing_tick_loop_is_restarted_and_shows_on_schedule_triggers(ws: Any, b: Any) -> None:
    t = b.create_trigger("hello", "schedule", schedule="* * * * *", input={"name": "cron"})
    webhook = b.create_trigger("hello", "webhook")
    ahead = [dt.timedelta(0)]
    sched = Scheduler(b.services, clock=lambda: utcnow() + ahead[0], backoff=FAST)
    broken = threading.Event()
    broken.set()
    rows = sched._schedule_rows

    def schedule_rows() -> list[dict[str, Any]]:  # the store failing under the tick loop
        if broken.is_set():
            raise OSError("database disk image is malformed")
        return rows()

    sched._schedule_rows = schedule_rows  # type: ignore[method-assign]
    sched.start(interval_s=0.05)
    try:
        failing = wait_for("the tick loop's error", lambda: (x := b.get_trigger(t.id)).failure() and x)
        assert failing.failure().startswith("scheduler failed: OSError: database disk image is malformed (retrying")
        assert b.get_trigger(webhook.id).error is None  # webhooks do not depend on the tick loop
        wait_for("restarts", lambda: b.get_trigger(t.id).restarts >= 2)
        assert not sched.fired

        broken.clear()
        wait_for("the tick loop to run again", lambda: not b.get_trigger(t.id).retry_at)
        ahead[0] = dt.timedelta(minutes=2)  # the next slot is due
        wait_for("the schedule trigger to fire", lambda: any(tid == t.id for tid, _ in sched.fired))
        sched.wait_idle()
    finally:
        sched.stop()
    assert [e.source for e in b.list_executions("staging", source="trigger")] == [f"trigger:{t.id}"]
    assert b.get_trigger(t.id).restarts >= 2


def test_one_failing_schedule_trigger_does_not_hold_up_the_others(ws: Any, b: Any) -> None:
    good = b.create_trigger("hello", "schedule", schedule="* * * * *")
    bad = b.create_trigger("hello", "schedule", schedule="* * * * *", timezone="Europe/Paris")
    store = b.services.store
    with store.unit_of_work():  # a time zone this machine's tz database lacks
        store.update_trigger(bad.id, utcnow(), timezone="Mars/Olympus_Mons")
    sched = Scheduler(b.services, backoff=FAST)
    try:
        sched.arm(utcnow())  # at start, too
        assert "Mars/Olympus_Mons" in (b.get_trigger(bad.id).error or "")
        assert sched.tick(utcnow() + dt.timedelta(minutes=2)) == [good.id]
        sched.wait_idle()
    finally:
        sched.stop()
    shown = b.get_trigger(bad.id)  # reading it still works, and says why it does not fire
    assert shown.error is not None and "Mars/Olympus_Mons" in shown.error and shown.next_fire_at is None
    assert shown.failure().startswith("scheduler failed: ZoneInfoNotFoundError")
    assert b.get_trigger(good.id).error is None
    assert {t.id for t in b.list_triggers("staging")} == {good.id, bad.id}


# ------------------------------------------------------------ a real server


def rf_json(*args: str, cwd: Path) -> Any:
    r = run_rf_here(*args, "--json", cwd=cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def server_fired(root: Path, trigger_id: str, name: str) -> bool:
    executions = rf_json("executions", "list", "--source", f"trigger:{trigger_id}", "--limit", "100", cwd=root)
    return any(c["path"].endswith(name) for ex in executions if ex["status"] == "succeeded"
               for c in (ex["input"] or {}).get("changes", []))


def write_until_server_fired(root: Path, directory: Path, trigger_id: str, name: str) -> None:
    def fired() -> bool:
        (directory / name).write_text(str(time.monotonic()))
        return server_fired(root, trigger_id, name)

    wait_for(f"{name} to fire {trigger_id} in the server", fired, timeout=30, every=0.3)


@pytest.fixture
def echo_server(ws: Any) -> Iterator[Any]:
    write_agent(ws.root, "echo", ECHO_PY, HELLO_TOML)
    (ws.root / "inbox").mkdir()
    s = start_server(ws.root, extra_env={"RF_TRIGGER_RETRY_S": "0.2,0.5"})
    try:
        assert run_rf_here("agents", "deploy", "echo", cwd=ws.root).returncode == 0
        yield s
    finally:
        s.stop()


def test_watch_trigger_fires_in_a_real_server(ws: Any, echo_server: Any) -> None:
    t = rf_json("triggers", "create", "--agent", "echo", "--watch", "inbox", cwd=ws.root)
    write_until_server_fired(ws.root, ws.root / "inbox", t["id"], "hello.txt")
    shown = rf_json("triggers", "show", t["id"], cwd=ws.root)
    assert shown["error"] is None and shown["restarts"] == 0 and shown["retry_at"] is None


def test_broken_watcher_in_a_real_server_shows_its_error_and_recovers(ws: Any, echo_server: Any) -> None:
    inbox = ws.root / "inbox"
    t = rf_json("triggers", "create", "--agent", "echo", "--watch", "inbox", cwd=ws.root)
    tid = t["id"]
    write_until_server_fired(ws.root, inbox, tid, "first.txt")

    shutil.rmtree(inbox)
    failing = wait_for("the error in rf triggers show", lambda: (
        x := rf_json("triggers", "show", tid, cwd=ws.root))["retry_at"] and x, every=0.2)
    assert failing["error"].startswith("the watched path") and failing["error_at"]
    # The watcher fails, waits, runs again, fails again...: each listing is read while it waits
    # (a read that lands on a retry sees "running again", and the next one the failure again).
    listed = wait_for("rf triggers list to show the failure", lambda: (
        r := run_rf("triggers", "list", cwd=ws.root)).returncode == 0 and "watcher failed" in r.stdout and r,
        every=0.2)
    assert "enabled · watcher failed: the watched path" in listed.stdout and "(retrying " in listed.stdout
    shown = wait_for("rf triggers show to show the failure", lambda: (
        r := run_rf_here("triggers", "show", tid, cwd=ws.root)).returncode == 0 and "watcher failed" in r.stdout
        and r, every=0.2)
    assert "last error" in shown.stdout and "restarts" in shown.stdout

    inbox.mkdir()
    wait_for("the watcher to run again", lambda: rf_json("triggers", "show", tid, cwd=ws.root)["retry_at"] is None,
             every=0.2)
    write_until_server_fired(ws.root, inbox, tid, "second.txt")
    recovered = rf_json("triggers", "show", tid, cwd=ws.root)
    assert recovered["restarts"] >= 1 and recovered["error"].startswith("the watched path")  # kept
    assert "watcher failed" not in run_rf_here("triggers", "list", cwd=ws.root).stdout


# ------------------------------------------------------------ the dashboard


@pytest.mark.anyio
async def test_dashboard_triggers_view_shows_a_failing_watcher(backend: Any, tmp_path: Path) -> None:
    from rf.tui.views.others import TriggersView

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    t = backend.create_trigger("hello", "watch", watch_path=str(inbox))
    inbox.rmdir()
    sched = Scheduler(backend.services, backoff=Backoff(first_s=30, cap_s=30))
    sched.start(interval_s=0.05)
    try:
        wait_for("the watcher's error", lambda: backend.get_trigger(t.id).failure())
        app = make_app(backend, start_view="triggers")
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            view = app.query_one(TriggersView)
            view.place = t.id
            view.show_detail()
            await settle(pilot)
            text = screen_text(app)
    finally:
        sched.stop()
    assert "yes · watcher failed" in text, text
    assert "watcher failed: the watched path does not exist (retrying in" in text, text
