"""Triggers: schedules (injectable clock), webhooks (real server), watches;
each bound to one environment; production copies go live only via a release. The CLI tests run
a couple of `rf` commands as real subprocesses, the rest in-process (run_rf_here, same entry point)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import HELLO_TOML, ServerProc, run_rf, run_rf_here, write_agent
from rf.client import open_local
from rf.config import snapshot_dir
from rf.errors import NotFound, ProductionReadOnly, UsageError
from rf.ids import parse_iso
from rf.services.scheduler import Scheduler
from rf.services.triggers import next_fire, sign_webhook

SLOW = "import time\ndef handle(input, ctx):\n    time.sleep(1.5)\n    return 'done'\n"


@pytest.fixture
def b(ws: Any) -> Iterator[Any]:
    backend = open_local(ws)
    backend.deploy("hello", snapshot_dir(ws.root / "agents" / "hello"), "v1", "ada")
    backend.promote("hello", "ada")
    yield backend
    backend.close()


def sources(b: Any, env: str) -> list[str]:
    return [e.source for e in b.list_executions(env, limit=1000)]


def test_schedule_fires_at_expected_times(b: Any) -> None:
    t = b.create_trigger("hello", "schedule", schedule="*/5 * * * *", input={"name": "cron"})
    assert t.env == "staging" and t.live and t.next_fire_at
    sched = Scheduler(b.services)
    created = parse_iso(t.created_at)
    slot1 = next_fire("*/5 * * * *", None, created)
    slot2 = slot1 + dt.timedelta(minutes=5)
    assert sched.tick(slot1 - dt.timedelta(seconds=1)) == []
    assert sched.tick(slot1) == [t.id]
    assert sched.tick(slot1 + dt.timedelta(seconds=30)) == []  # the same slot never fires twice
    sched.wait_idle()
    assert sched.tick(slot2 + dt.timedelta(seconds=2)) == [t.id]
    sched.wait_idle()
    assert sources(b, "staging") == [f"trigger:{t.id}"] * 2
    assert sources(b, "production") == []  # a staging trigger never fires in production
    ex = b.list_executions("staging")[0]
    assert ex.input == {"name": "cron"} and ex.output["message"] == "hello, cron"
    sched.stop()


def test_timezone_and_bad_schedules(b: Any) -> None:
    after = dt.datetime(2026, 11, 26, 10, 0)
    assert next_fire("0 9 * * *", "Europe/Paris", after) == dt.datetime(2026, 11, 27, 8, 0)  # CET = UTC+1
    with pytest.raises(UsageError, match="invalid cron"):
        b.create_trigger("hello", "schedule", schedule="every minute")
    with pytest.raises(UsageError, match="unknown timezone"):
        b.create_trigger("hello", "schedule", schedule="* * * * *", timezone="Mars/Olympus")
    with pytest.raises(UsageError, match="does not exist"):
        b.create_trigger("hello", "watch", watch_path="/no/such/dir")
    with pytest.raises(NotFound):
        b.create_trigger("ghost", "webhook")
    with pytest.raises(ProductionReadOnly):
        b.create_trigger("hello", "webhook", env="production")
    assert b.list_triggers("staging") == [] and b.list_triggers("production") == []


def test_overlap_skip_and_catch_up(ws: Any, b: Any) -> None:
    write_agent(ws.root, "slow", SLOW, HELLO_TOML)
    b.deploy("slow", snapshot_dir(ws.root / "agents" / "slow"), "v1", "ada")
    t = b.create_trigger("slow", "schedule", schedule="* * * * *")
    sched = Scheduler(b.services)
    slot = next_fire("* * * * *", None, parse_iso(t.created_at))
    assert sched.tick(slot) == [t.id]
    assert sched.tick(slot + dt.timedelta(minutes=1)) == []  # previous run still going: skipped
    assert sched.skipped and sched.skipped[0][0] == t.id
    sched.wait_idle()
    assert len(sources(b, "staging")) == 1

    last = b.create_trigger("hello", "schedule", schedule="* * * * *", catch_up="last")
    none = b.create_trigger("hello", "schedule", schedule="* * * * *")
    later = parse_iso(last.created_at) + dt.timedelta(hours=3)  # the server was down for 3 hours
    sched2 = Scheduler(b.services)
    sched2.arm(later)
    sched2.wait_idle()
    fired = [tid for tid, _ in sched2.fired]
    assert fired.count(last.id) == 1 and none.id not in fired
    assert sched2.tick(later) == []  # missed slots are settled, not replayed
    sched.stop()
    sched2.stop()


def test_duplicate_is_a_release_item_and_goes_live_when_published(b: Any) -> None:
    t = b.create_trigger("hello", "schedule", schedule="* * * * *", input={"name": "prod"})
    copy = b.duplicate_trigger(t.id, "production")
    assert copy.env == "production" and not copy.live and copy.source_id == t.id
    items = [i for i in b.release_items() if i.kind == "trigger"]
    assert [i.name for i in items] == [copy.id]
    sched = Scheduler(b.services)
    far = parse_iso(copy.created_at) + dt.timedelta(minutes=10)
    assert copy.id not in sched.tick(far)  # staged: never fires
    with pytest.raises(ProductionReadOnly):
        b.set_trigger_enabled(copy.id, False)
    b.publish_release([f"trigger:{copy.id}"])
    assert b.get_trigger(copy.id).live
    staged = b.delete_trigger(copy.id)  # a live production trigger: its removal is a release item
    assert staged.staged and staged.item.after == {"removed": True} and b.get_trigger(copy.id).live
    later = far + dt.timedelta(minutes=2)
    assert copy.id in sched.tick(later)
    sched.wait_idle()
    prod = b.list_executions("production")
    assert [e.source for e in prod] == [f"trigger:{copy.id}"] and prod[0].output["message"] == "hello, prod"
    sched.stop()


def test_watch_trigger_passes_changed_paths(ws: Any, b: Any) -> None:
    inbox = ws.root / "inbox"
    inbox.mkdir()
    write_agent(ws.root, "echo", "def handle(input, ctx):\n    return input\n", HELLO_TOML)
    b.deploy("echo", snapshot_dir(ws.root / "agents" / "echo"), "v1", "ada")
    t = b.create_trigger("echo", "watch", watch_path="inbox", input={"tag": "w"})
    sched = Scheduler(b.services, watch_debounce_ms=100)
    sched.sync_watchers()
    try:
        # (until the watcher is up, a change may go unseen: write until one fires)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not sched.fired:
            (inbox / "a.txt").write_text(f"hi {time.monotonic()}")
            time.sleep(0.2)
        sched.wait_idle()
    finally:
        sched.stop()
    ex = b.list_executions("staging", source="trigger")[0]
    assert ex.source == f"trigger:{t.id}" and ex.input["tag"] == "w"
    assert any(c["path"].endswith("a.txt") for c in ex.input["changes"])


def test_webhooks_over_http(ws: Any, server: ServerProc) -> None:
    assert run_rf("agents", "deploy", "hello", cwd=ws.root).returncode == 0
    assert run_rf_here("agents", "promote", "hello", "--yes", cwd=ws.root).returncode == 0
    r = run_rf("triggers", "create", "--agent", "hello", "--webhook", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout)
    secret, url = t["secret"], server.url + t["url"]
    assert secret and t["url"] == f"/staging/hooks/{t['id']}"
    body = json.dumps({"name": "hook"}).encode()

    def signed(key: str, payload: bytes = body) -> dict[str, str]:
        return {"X-RF-Signature": sign_webhook(key, payload)}

    assert httpx.post(url, content=body).status_code == 401
    assert httpx.post(url, content=body, headers=signed("wrong")).status_code == 401
    ok = httpx.post(url, content=body, headers=signed(secret))
    assert ok.status_code == 200 and ok.json()["output"]["message"] == "hello, hook"
    # the old schemes are gone: a bare secret, and a signature of the body alone (both replayable)
    assert httpx.post(url, content=body, headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    old_sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert httpx.post(url, content=body, headers={"X-RF-Signature": old_sig}).status_code == 401
    # several v1 values (a secret being rotated): one right one is enough
    # (another body: the same body signed in the same second as `ok` would be a replay)
    t_now, other = int(time.time()), json.dumps({"name": "rotated"}).encode()
    rotated = sign_webhook("old-secret", other, t_now) + ",v1=" + sign_webhook(secret, other, t_now).split("v1=")[1]
    assert httpx.post(url, content=other, headers={"X-RF-Signature": rotated}).status_code == 200
    r = httpx.post(url, content=b"not json", headers=signed(secret, b"not json"))
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]["message"]
    other_env = server.url + f"/production/hooks/{t['id']}"
    assert httpx.post(other_env, content=body, headers=signed(secret)).status_code == 401
    # the secret never shows again
    shown = json.loads(run_rf_here("triggers", "show", t["id"], "--json", cwd=ws.root).stdout)
    assert shown["secret"] is None
    listed = run_rf_here("triggers", "list", cwd=ws.root).stdout
    assert t["id"] in listed and secret not in listed
    prod = json.loads(run_rf_here("executions", "list", "--env", "production", "--json", cwd=ws.root).stdout)
    assert prod == []
    # disabled: refused like a wrong signature
    assert run_rf_here("triggers", "disable", t["id"], cwd=ws.root).returncode == 0
    assert httpx.post(url, content=body, headers=signed(secret)).status_code == 401
    assert run_rf_here("triggers", "enable", t["id"], cwd=ws.root).returncode == 0
    # duplicate → staged → publish → production webhook (with its own secret) works
    r = run_rf_here("triggers", "duplicate", t["id"], "--env", "production", "--json", cwd=ws.root)
    copy = json.loads(r.stdout)
    purl = server.url + copy["url"]
    assert httpx.post(purl, content=body, headers=signed(copy["secret"])).status_code == 401  # not live yet
    r = run_rf_here("releases", "publish", f"trigger:{copy['id']}", "--yes", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    r = httpx.post(purl, content=body, headers=signed(copy["secret"]))
    assert r.status_code == 200
    assert httpx.post(purl, content=body, headers=signed(secret)).status_code == 401
    prod = json.loads(run_rf_here("executions", "list", "--env", "production", "--json", cwd=ws.root).stdout)
    assert [e["source"] for e in prod] == [f"trigger:{copy['id']}"]


def test_cli_triggers(ws: Any) -> None:
    root = ws.root
    assert run_rf("agents", "deploy", "hello", cwd=root).returncode == 0
    r = run_rf_here("triggers", "create", "--agent", "hello", "--schedule", "0 9 * * 1", "--tz", "Europe/Paris", cwd=root)
    assert r.returncode == 0 and "next run" in r.stderr
    rows = json.loads(run_rf_here("triggers", "list", "--json", cwd=root).stdout)
    tid = rows[0]["id"]
    assert rows[0]["next_fire_at"].endswith("Z")
    r = run_rf_here("triggers", "fire", tid, "--json", cwd=root)
    assert r.returncode == 0 and json.loads(r.stdout)["source"] == f"trigger:{tid}"
    assert run_rf_here("triggers", "disable", tid, cwd=root).returncode == 0
    assert json.loads(run_rf_here("triggers", "show", tid, "--json", cwd=root).stdout)["enabled"] is False
    r = run_rf("triggers", "create", "--agent", "hello", "--schedule", "nope", cwd=root)
    assert r.returncode == 2 and "invalid cron" in r.stderr
    r = run_rf_here("triggers", "create", "--agent", "hello", cwd=root)
    assert r.returncode == 2 and "exactly one" in r.stderr
    assert run_rf_here("triggers", "delete", tid, "--yes", cwd=root).returncode == 0
    assert json.loads(run_rf_here("triggers", "list", "--json", cwd=root).stdout) == []


def test_the_schedulers_memory_of_fired_slots_is_bounded(b: Any) -> None:
    """A server runs for months: the fired/skipped slots it remembers do not grow forever."""
    from rf.services import scheduler

    t = b.create_trigger("hello", "schedule", schedule="* * * * *")
    sched = Scheduler(b.services)
    start = parse_iso(t.created_at)
    try:
        for minute in range(1, scheduler.RECENT + 50):
            sched.fired.append((t.id, start + dt.timedelta(minutes=minute)))
        assert len(sched.fired) == scheduler.RECENT
        assert sched.fired[-1][1] == start + dt.timedelta(minutes=scheduler.RECENT + 49)
    finally:
        sched.stop()
