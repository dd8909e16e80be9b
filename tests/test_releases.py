"""Releases: pending items, plans, atomic publish, history, rollback, safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from conftest import HELLO_PY, run_rf, write_agent
from rf.client import open_local
from rf.config import snapshot_dir
from rf.errors import Conflict, NotFound, UsageError
from rf.store import Store

ROOT = Path(__file__).resolve().parent.parent


def deploy(b: Any, ws: Any, name: str, msg: str = "deploy") -> None:
    assert b.deploy(name, snapshot_dir(ws.root / "agents" / name), msg, "ada").created


def test_pending_items_plan_and_publish(ws: Any) -> None:
    b = open_local(ws)
    try:
        with pytest.raises(Conflict) as empty:
            b.plan_release(all=True)
        assert "nothing to publish" in empty.value.message
        deploy(b, ws, "hello", "v1")
        items = b.release_items()
        assert [(i.kind, i.name) for i in items] == [("agent", "hello")]
        assert items[0].before is None and items[0].summary.startswith("new in production")
        plan = b.plan_release(all=True)
        release = b.publish_release(plan_id=plan.id, all=True, message="first", author="ada")
        assert release.plan_id == plan.id and release.message == "first"
        assert b.get_agent("hello").production_commit == items[0].after
        assert b.release_items() == []
        # the same plan cannot be published twice
        with pytest.raises(Conflict):
            b.publish_release(plan_id=plan.id, all=True)
    finally:
        b.close()


def test_stale_plan_is_refused_with_what_changed(ws: Any) -> None:
    b = open_local(ws)
    try:
        deploy(b, ws, "hello", "v1")
        plan = b.plan_release(["hello"])
        (ws.root / "agents" / "hello" / "agent.py").write_text(HELLO_PY.replace("hello, ", "yo, "))
        deploy(b, ws, "hello", "v2")
        with pytest.raises(Conflict) as info:
            b.publish_release(["hello"], plan_id=plan.id)
        assert "agent hello changed in staging" in info.value.message
        assert info.value.hint and "rf releases plan" in info.value.hint
        assert b.get_agent("hello").production_commit is None  # production unchanged
        with pytest.raises(NotFound):
            b.publish_release(["hello"], plan_id="0000000000000000")
        with pytest.raises(NotFound):
            b.plan_release(["nope"])
        with pytest.raises(NotFound):
            b.get_release("rel_nope")
    finally:
        b.close()


def test_history_show_and_rollback(ws: Any) -> None:
    b = open_local(ws)
    try:
        deploy(b, ws, "hello", "v1")
        r1 = b.publish_release(all=True, message="r1", author="ada")
        v1 = b.get_agent("hello").production_commit
        (ws.root / "agents" / "hello" / "agent.py").write_text(HELLO_PY.replace("hello, ", "yo, "))
        deploy(b, ws, "hello", "v2")
        r2 = b.publish_release(all=True, message="r2", author="ada")
        v2 = b.get_agent("hello").production_commit
        assert [r.id for r in b.list_releases()] == [r2.id, r1.id]
        shown = b.get_release(r2.id)
        assert shown.items[0].before == v1 and shown.items[0].after == v2
        # rolling back r1 conflicts with r2, which changed the same agent
        with pytest.raises(Conflict) as info:
            b.rollback_release(r1.id)
        assert r2.id in info.value.message and info.value.hint and "--force" in info.value.hint
        rb = b.rollback_release(r2.id, author="ada")
        assert rb.kind == "rollback"
        agent = b.get_agent("hello")
        assert agent.production_commit == v1 and agent.staging_commit == v2  # staging untouched
        assert b.invoke("production", "hello", {"name": "a"}).output["message"] == "hello, a"
        assert len(b.list_releases()) == 3  # history is append-only
        forced = b.rollback_release(r1.id, force=True)
        assert forced.warnings and b.get_agent("hello").production_commit is None
    finally:
        b.close()


def test_concurrent_publishes_serialize(ws: Any) -> None:
    b = open_local(ws)
    try:
        deploy(b, ws, "hello", "v1")
        plan = b.plan_release(all=True)
        results: list[Any] = []

        def go() -> None:
            try:
                results.append(b.publish_release(all=True, plan_id=plan.id))
            except Conflict as exc:
                results.append(exc)

        threads = [threading.Thread(target=go) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(1 for r in results if isinstance(r, Conflict)) == 1
        assert len(b.list_releases()) == 1
    finally:
        b.close()


def test_only_releases_move_production_heads() -> None:
    """Static guard: production heads are written only by the release path."""
    import re

    offenders = []
    for path in (ROOT / "rf").rglob("*.py"):
        if path.name == "releases.py" or path.parent.name == "store":
            continue
        for call in re.findall(r"set_head\(([^)]*)\)", path.read_text()):
            if '"staging"' not in call:
                offenders.append(f"{path.name}: set_head({call})")
    assert offenders == []


def test_production_state_matches_release_history(ws: Any) -> None:
    b = open_local(ws)
    try:
        write_agent(ws.root, "other")
        deploy(b, ws, "hello")
        deploy(b, ws, "other")
        b.promote("hello", "ada")
        b.publish_release(["other"])
        (ws.root / "agents" / "hello" / "agent.py").write_text(HELLO_PY.replace("hello, ", "yo, "))
        deploy(b, ws, "hello")
        last = b.publish_release(all=True)
        b.rollback_release(last.id)
        state = b.services.release_history.production_state()
        for agent in b.list_agents():
            assert state.get(("agent", agent.name)) == agent.production_commit
    finally:
        b.close()


@pytest.mark.parametrize("kill_after", [0, 25, 49, 50])
def test_publish_killed_midway_is_all_or_nothing(tmp_path: Path, kill_after: int) -> None:
    from rf.config import init_workspace

    ws = init_workspace(tmp_path / "ws")
    for n in range(50):
        write_agent(ws.root, f"a{n:02d}")
    b = open_local(ws)
    try:
        for n in range(50):
            b.deploy(f"a{n:02d}", snapshot_dir(ws.root / "agents" / f"a{n:02d}"), "v1", "ada")
    finally:
        b.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    # The pause is injected by a wrapper around rf's entry point (the product code only has no-op hooks).
    when = f"item:{kill_after}" if kill_after < 50 else "commit"
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "rf_publish_pause.py"), when,
                             "releases", "publish", "--all", "--yes"], cwd=ws.root, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert proc.stdout is not None
    marker = proc.stdout.readline()
    while marker and not marker.startswith("RF_TEST_"):
        marker = proc.stdout.readline()
    assert marker.startswith("RF_TEST_PAUSED" if kill_after < 50 else "RF_TEST_COMMITTED"), marker
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with Store.open(ws.db_path) as store:
        heads = [r["production_commit"] for r in store.agent_rows()]
        releases = store.list_releases()
    if kill_after < 50:
        assert heads == [None] * 50 and releases == []
    else:
        assert all(h is not None for h in heads) and len(releases) == 1


def test_cli_release_flow(ws: Any) -> None:
    root = ws.root
    r = run_rf("releases", cwd=root)
    assert r.returncode == 0 and "nothing to publish" in r.stdout
    assert run_rf("agents", "deploy", "hello", "-m", "v1", cwd=root).returncode == 0
    r = run_rf("releases", "--json", cwd=root)
    assert [i["name"] for i in json.loads(r.stdout)] == ["hello"]
    r = run_rf("releases", "publish", "--all", cwd=root)
    assert r.returncode == 2 and "--yes" in r.stderr  # no TTY, no --yes: refused
    plan = json.loads(run_rf("releases", "plan", "--all", "--json", "--save", str(root / "plan.json"), cwd=root).stdout)
    assert json.loads((root / "plan.json").read_text())["id"] == plan["id"]
    r = run_rf("releases", "publish", "--all", "--plan", plan["id"], "-m", "go", cwd=root)
    assert r.returncode == 0, r.stderr
    assert "published release" in r.stderr
    hist = json.loads(run_rf("releases", "history", "--json", cwd=root).stdout)
    assert hist[0]["message"] == "go"
    r = run_rf("releases", "show", hist[0]["id"], cwd=root)
    assert "agent hello" in r.stdout
    r = run_rf("releases", "publish", "--all", "--yes", cwd=root)
    assert r.returncode == 1 and "nothing to publish" in r.stderr
    r = run_rf("releases", "rollback", "rel_unknown", "--yes", cwd=root)
    assert r.returncode == 1 and "no release" in r.stderr
    r = run_rf("releases", "rollback", hist[0]["id"], "--yes", cwd=root)
    assert r.returncode == 0, r.stderr
    agents = json.loads(run_rf("agents", "list", "--json", cwd=root).stdout)
    assert agents[0]["production_commit"] is None
    r = run_rf("releases", "publish", "ghost", "--yes", cwd=root)
    assert r.returncode == 1 and "nothing to publish for 'ghost'" in r.stderr


def test_usage_errors() -> None:
    with pytest.raises(UsageError):
        raise UsageError("x")


def test_releases_diff_shows_connector_changes(ws: Any) -> None:
    """`rf releases diff` shows a connector item as `rf connectors diff` does: config fields
    before → after and resources added / removed (not the instances' content hashes)."""
    b = open_local(ws)
    try:
        b.create_connector("crm", "http://127.0.0.1:9/live")
        b.add_resource("crm", "get-customer", "GET", "/customers/{id}")
        assert b.publish_connector("crm", "ada").changed
        b.edit_connector("crm", target="production", base_url="http://127.0.0.1:9/live2")
        b.add_resource("crm", "list-orders", "GET", "/orders")
        b.remove_resource("crm", "get-customer")
        production_hash = b.diff_connector("crm").production
    finally:
        b.close()
    r = run_rf("releases", "diff", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert "~ base URL: http://127.0.0.1:9/live → http://127.0.0.1:9/live2" in r.stdout
    assert "+ resource list-orders" in r.stdout and "- resource get-customer" in r.stdout
    assert f'production: "{production_hash}"' not in r.stdout


def test_an_empty_selection_is_an_error_never_everything(ws: Any) -> None:
    """Service layer (so every surface): "all" is explicit, or a reviewed plan id."""
    b = open_local(ws)
    try:
        write_agent(ws.root, "other")
        deploy(b, ws, "hello")
        deploy(b, ws, "other")
        for kwargs in ({}, {"items": []}, {"items": None, "all": False}, {"message": "go"}):
            with pytest.raises(UsageError, match="no items selected"):
                b.publish_release(**kwargs)
            with pytest.raises(UsageError, match="no items selected"):
                b.plan_release(**{k: v for k, v in kwargs.items() if k != "message"})
        with pytest.raises(UsageError, match="not both"):
            b.publish_release(["hello"], all=True)
        assert b.list_releases() == [] and all(a.production_commit is None for a in b.list_agents())
        # A plan id alone publishes exactly the reviewed items, not whatever is pending now.
        plan = b.plan_release(["hello"])
        release = b.publish_release(plan_id=plan.id)
        assert [(i.kind, i.name) for i in release.items] == [("agent", "hello")]
        assert b.get_agent("other").production_commit is None
        with pytest.raises(Conflict, match="nothing in plan"):
            b.publish_release(plan_id=plan.id)
        with pytest.raises(NotFound):
            b.publish_release(plan_id="0000000000000000")
    finally:
        b.close()


def test_product_code_reads_no_test_only_environment_variable() -> None:
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "rf").rglob("*.py") if "RF_TEST_" in p.read_text()]
    assert offenders == []
