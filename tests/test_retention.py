"""Retention and `rf gc`: execution history beyond [retention] goes (with its spans and
session messages), what a release or an environment uses never does; stale working copies,
unreachable commits, unused blobs and old unpublished plans go with `rf gc`; the server
applies the history part by itself. Real workspaces, real store files, real `rf`."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import run_rf, run_rf_here, start_server, write_agent
from rf.client import Backend, HttpBackend, LocalBackend, open_local
from rf.config import load_workspace
from rf.errors import NotFound
from rf.ids import id_at, iso, micros_of, new_id, utcnow
from rf.models import Execution, GcResult
from rf.services.retention import CACHE_GRACE_S, KINDS
from rf.services.uploads import UPLOAD_IDLE_S
from rf.store.executions import owner

DAY = dt.timedelta(days=1)


def set_retention(root: Path, text: str) -> None:
    path = root / "rf.toml"
    path.write_text(path.read_text() + "\n" + text)


def record(b: LocalBackend, env: str, when: dt.datetime, *, session: str | None = None, seq: int = 0,
           agent: str = "hello") -> str:
    """An execution that started at *when*, with two child spans, and (in *session*) the two
    session messages it wrote, recorded through the store as a real run records them."""
    store = b.services.store
    ex_id = id_at("ex", when) + new_id("ex")[-12:]
    ended = when + dt.timedelta(seconds=1)
    start_ns, end_ns = micros_of(when) * 1000, micros_of(ended) * 1000
    trace_id = os.urandom(16).hex()
    root = json.dumps([trace_id, os.urandom(8).hex(), start_ns, end_ns, "ok", None, {"commit": "c1"}])
    ex = Execution(id=ex_id, env=env, agent=agent, commit="c1", source="invoke", status="succeeded",
                   input={"message": "hi"}, output={"message": "hello"}, started_at=iso(when), ended_at=iso(ended),
                   duration_ms=1000.0, session_id=session)
    store.writer.begin_group()
    try:
        store.record_execution(ex, when, ended, root)
        spans = [[os.urandom(8).hex(), None, "llm", f"call {i}", start_ns + i, start_ns + i + 10, "ok", None, {"i": i}]
                 for i in range(2)]
        store.queue_span_batch(env, trace_id, ex_id, agent, start_ns, end_ns, 2, json.dumps(spans))
        if session is not None:
            messages = json.dumps([["user", "hi", micros_of(when)], ["assistant", "hello", micros_of(ended)]])
            store.queue_session_turn((env, agent, session, seq, 2, ex_id, when, ended, messages))
        store.queue_memory([(env, f"k-{ex_id}", 1, '"v"', agent, ex_id, ended)])
    finally:
        store.writer.end_group()
    store.flush()
    return ex_id


def freed(result: GcResult) -> dict[str, int]:
    return {f.kind: f.count for f in result.freed}


def ids(b: Backend, env: str) -> set[str]:
    return {e.id for e in b.list_executions(env, limit=1000)}


@pytest.fixture
def history(ws: Any) -> Iterator[tuple[LocalBackend, dict[str, Any]]]:
    """staging keeps 7 days and the newest 3; production 30 days, no count limit. Recorded:
    2 old staging executions (session s-old), 5 recent ones (session s-new), one old one
    still running (its final row and its marker both there), production at 20 and 40 days."""
    set_retention(ws.root, "[retention.staging]\ndays = 7\nmax_executions = 3\n"
                           "[retention.production]\ndays = 30\nmax_executions = 0\n")
    b = open_local(load_workspace(ws.root))
    now = utcnow()
    made: dict[str, Any] = {
        "old": [record(b, "staging", now - 10 * DAY - i * dt.timedelta(minutes=1), session="s-old", seq=2 * i)
                for i in range(2)],
        "recent": [record(b, "staging", now - dt.timedelta(hours=1) + i * dt.timedelta(minutes=1),
                          session="s-new", seq=2 * i) for i in range(5)],
        "prod_kept": record(b, "production", now - 20 * DAY),
        "prod_old": record(b, "production", now - 40 * DAY),
    }
    running = record(b, "staging", now - 12 * DAY)
    store = b.services.store
    # Session messages whose execution has no row (any more): they go by their own age.
    orphan = json.dumps([["user", "hi", micros_of(now - 9 * DAY)], ["assistant", "yo", micros_of(now - 9 * DAY)]])
    store.queue_session_turn(("staging", "hello", "s-orphan", 0, 2, "ex_gone", now - 9 * DAY, now - 9 * DAY, orphan))
    store.writer.put("running_executions", (running, "staging", "hello", "c1", "invoke", None, None,
                                            now - 12 * DAY, now - 12 * DAY, now, owner()))
    store.flush()
    made["running"] = running
    try:
        yield b, made
    finally:
        b.close()


def test_history_beyond_the_retention_goes_with_its_spans_and_session_messages(
        history: tuple[LocalBackend, dict[str, Any]]) -> None:
    b, made = history
    store = b.services.store
    before = {env: ids(b, env) for env in ("staging", "production")}
    assert len(before["staging"]) == 8 and len(before["production"]) == 2
    assert {s.id for s in b.list_sessions("staging")} == {"s-new", "s-old", "s-orphan"}

    dry = b.gc(dry_run=True)
    # 2 older than 7 days, 2 recent ones beyond the newest 3; in production the 40-day one
    assert dry.dry_run and freed(dry)["executions"] == 5
    assert freed(dry)["spans"] == 10 and freed(dry)["session_messages"] == 8 + 2
    assert {env: ids(b, env) for env in ("staging", "production")} == before, "a dry run deletes nothing"

    result = b.gc()
    assert not result.dry_run and freed(result) == freed(dry) | {k: freed(result)[k] for k in KINDS[3:]}
    assert result.bytes > 0 and result.store_bytes > 0
    assert ids(b, "staging") == set(made["recent"][2:]) | {made["running"]}, "newest 3 and the one in progress"
    assert ids(b, "production") == {made["prod_kept"]}
    gone = [*made["old"], *made["recent"][:2], made["prod_old"]]
    for ex_id in gone:
        with pytest.raises(NotFound):
            b.get_trace(ex_id)
    assert len(b.get_trace(made["recent"][-1]).spans) == 3  # the root and its two children
    # A session is its messages: s-old and s-orphan had only old ones; s-new keeps those of the
    # 3 kept runs.
    sessions = {s.id: s.messages for s in b.list_sessions("staging")}
    assert sessions == {"s-new": 6}
    assert [m.execution_id for m in b.get_session("s-new").messages][::2] == made["recent"][2:]
    # Memory is not history: every key written by a deleted execution is still there.
    assert {m.key for m in b.list_memory("staging")} >= {f"k-{e}" for e in made["old"]}
    assert store.query_one("SELECT count(*) FROM running_executions") == (1,)
    # Nothing is left to delete: a second pass frees nothing.
    assert freed(b.gc())["executions"] == 0


def test_rf_gc_dry_run_reports_and_deletes_nothing_then_rf_gc_deletes(
        history: tuple[LocalBackend, dict[str, Any]], ws: Any) -> None:
    b, made = history
    b.close()  # the store is opened by `rf gc` (no server)
    r = run_rf("gc", "--dry-run", "--json", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["dry_run"] is True and report["bytes"] > 0
    assert {f["kind"]: f["count"] for f in report["freed"]}["executions"] == 5
    # (another process, as `rf` is: the marker of this one's running execution is a dead one to it,
    # which its first read records as interrupted)
    r = run_rf("executions", "list", "--env", "staging", "--json", cwd=ws.root)
    assert len(json.loads(r.stdout)) == 8
    human = run_rf_here("gc", "--dry-run", cwd=ws.root)
    assert human.returncode == 0 and "would free" in human.stdout and "nothing was deleted" in human.stdout
    r = run_rf_here("gc", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    assert "freed" in r.stdout and "executions" in r.stdout
    r = run_rf_here("executions", "list", "--env", "staging", "--json", cwd=ws.root)
    # (its marker was a dead one for the first `rf executions list`, a real process: it recorded it as
    # interrupted, and the gc deleted it, 12 days old)
    assert {e["id"] for e in json.loads(r.stdout)} == set(made["recent"][2:])


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_rf_gc_collects_what_nothing_uses_and_keeps_what_releases_and_environments_use(ws: Any) -> None:
    root = ws.root

    def ok(*args: str) -> str:
        r = run_rf_here(*args, cwd=root)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    # v1 is published, runs in production (its commit directory is written), then replaced by v2
    # there: only the release history still names v1. Staging moves on to v3.
    ok("agents", "deploy", "hello", "-m", "v1")
    ok("agents", "promote", "hello", "--yes")
    ok("invoke", "hello", "--env", "production")
    for version in ("v2", "v3"):
        write_agent(root, "hello", code=f"def handle(input, ctx):\n    return '{version}'\n")
        ok("agents", "deploy", "hello", "-m", version)
        if version == "v2":
            ok("agents", "promote", "hello", "--yes")
    # An agent deployed to staging only, then deleted there: its commit is reachable from nothing.
    write_agent(root, "scratch", code="def handle(input, ctx):\n    return 'only scratch has this file'\n")
    ok("agents", "deploy", "scratch")
    ok("agents", "delete", "scratch", "--yes")
    # rf test leaves one working copy per version of the files.
    ok("test", "hello")
    write_agent(root, "hello", code="def handle(input, ctx):\n    return 'v4'\n")
    ok("test", "hello")
    # A plan reviewed and never published (the two promotes published theirs).
    ok("releases", "plan", "--json")
    b = open_local(load_workspace(root))
    try:
        store = b.services.store
        commits = [c.id for c in b.history("hello")]
        v3, v2, v1 = commits
        scratch = b.history("scratch")[0]
        releases = b.list_releases()
        old = utcnow() - 60 * DAY
        with store.transaction() as cur:
            cur.execute("UPDATE commits SET created_at = ?", [old])
            cur.execute("UPDATE release_plans SET created_at = ?", [old])
            # an approval of each plan (rf releases approve): the unpublished plan's goes with it
            for (plan_id,) in cur.execute("SELECT id FROM release_plans").fetchall():
                cur.execute("INSERT INTO plan_approvals VALUES (?, 'ben', 'ok', ?)", [plan_id, old])
            # a stored eval run from long ago, and a recent one
            for run_id, at in (("ev_old", old), ("ev_new", utcnow())):
                cur.execute("INSERT INTO eval_runs VALUES (?, 'staging', 'hello', 'c', ?, 1, 1, '{}')", [run_id, at])
            # live scores of a canary that ended long ago (collected), of one that ended yesterday
            # and of a running one (kept)
            for canary_id, status, ended in (("rel_old", "aborted", old), ("rel_new", "aborted", utcnow()),
                                             ("rel_run", "running", None)):
                cur.execute("INSERT INTO canaries (id, status, weight, state, started_at, started_by, ended_at)"
                            " VALUES (?, ?, 10, '{}', ?, 'ada', ?)", [canary_id, status, old, ended])
                for n in range(3):
                    cur.execute("INSERT INTO canary_scores VALUES (?, ?, 'canary', 'hello', 1, '[]', ?)",
                                [canary_id, f"ex_{canary_id}{n}", old])
        assert store.query_one("SELECT count(*) FROM release_plans") == (3,)
    finally:
        b.close()
    cache = root / ".rf" / "cache"
    copies = sorted((cache / "working-copy" / "hello").iterdir(), key=lambda d: d.stat().st_mtime)
    assert len(copies) == 2 and {d.name for d in (cache / "commits").iterdir()} == {v1}
    _age(copies[0], CACHE_GRACE_S * 3)
    _age(copies[1], CACHE_GRACE_S * 2)  # over the grace too, but its agent's newest: kept
    _age(cache / "commits" / v1, CACHE_GRACE_S * 2)
    # uploads whose client went away: knowledge-base pieces (an hour untouched) and deploy
    # chunks (idle past UPLOAD_IDLE_S); fresh ones are someone's upload in progress
    spools = cache / "kb-uploads"
    for batch, age in (("gone", CACHE_GRACE_S * 2), ("live", 0)):
        (spools / batch).mkdir(parents=True)
        (spools / batch / "0.piece").write_bytes(b"x" * 100)
        _age(spools / batch / "0.piece", age)
        _age(spools / batch, age)
    uploads = root / ".rf" / "uploads"
    uploads.mkdir(exist_ok=True)
    stale, fresh = uploads / f"{'a' * 20}.300.part", uploads / f"{'b' * 20}.300.part"
    for f, age in ((stale, UPLOAD_IDLE_S + 60), (fresh, 0)):
        f.write_bytes(b"y" * 200)
        _age(f, age)

    report = json.loads(ok("gc", "--json"))
    counts = {f["kind"]: f["count"] for f in report["freed"]}
    assert counts["commits"] == 1, "scratch's: hello's are used by staging, production or a release"
    assert counts["blobs"] >= 1 and counts["release_plans"] == 1 and counts["eval_runs"] == 1
    assert counts["canary_scores"] == 3, "only the scores of the canary that ended before plan_days"
    assert counts["working_copies"] == 1 and list((cache / "working-copy" / "hello").iterdir()) == [copies[1]]
    assert counts["commit_dirs"] == 1 and not (cache / "commits" / v1).exists()
    assert counts["upload_spools"] == 2, report
    assert {d.name for d in spools.iterdir()} == {"live"} and not stale.exists() and fresh.exists()

    b = open_local(load_workspace(root))
    try:
        store = b.services.store
        assert sorted(c.id for c in b.history("hello")) == sorted([v1, v2, v3])
        assert b.history("scratch") == []
        assert store.query("SELECT DISTINCT canary_id FROM canary_scores ORDER BY 1") == [("rel_new",), ("rel_run",)]
        used: set[str] = set()
        for commit_id in (v1, v2, v3):
            commit = store.get_commit(commit_id)
            assert commit is not None
            assert store.get_blobs(list(commit.tree.values())).keys() == set(commit.tree.values())
            used |= set(commit.tree.values())
        only_scratch = set(scratch.tree.values()) - used  # (its agent.toml is hello's too: kept)
        assert only_scratch and store.get_blobs(list(only_scratch)) == {}
        assert store.query_one("SELECT count(*) FROM release_plans") == (2,)
        assert store.query_one("SELECT count(*) FROM plan_approvals") == (2,)  # the published plans' stay
        assert store.query_one("SELECT id FROM eval_runs") == ("ev_new",)
        assert [r.id for r in b.list_releases()] == [r.id for r in releases]
    finally:
        b.close()
    # What a release needs is there: rolling back to v1 (whose directory went) runs v1 again.
    ok("releases", "rollback", releases[0].id, "--yes")
    out = json.loads(ok("invoke", "hello", "--env", "production", "--json"))
    assert out["output"] == {"message": "hello, world", "env": "production"}, out
    assert "v3" in ok("invoke", "hello", "--env", "staging", "--json")


@pytest.mark.parametrize("text, message", [
    ("[retention.staging]\ndayz = 3\n", "unknown key 'dayz' in [retention.staging] (did you mean 'days'?)"),
    ("[retention]\nplan_dayz = 3\n", "(did you mean 'plan_days'?)"),
    ("[retention.stagin]\ndays = 3\n", "unknown table [retention.stagin] in [retention] (did you mean 'staging'?)"),
    ("[retention.production]\nmax_executions = -1\n", "[retention.production] max_executions must be a whole number"),
    ("[retention.staging]\ndays = \"two weeks\"\n", "[retention.staging] days must be a whole number"),
])
def test_a_bad_retention_setting_is_an_error_that_says_what_to_write(ws: Any, text: str, message: str) -> None:
    set_retention(ws.root, text)
    r = run_rf("gc", "--dry-run", cwd=ws.root)
    assert r.returncode != 0 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "hint:" in r.stderr


@pytest.fixture(params=["local", "http"])
def backend(request: pytest.FixtureRequest, ws: Any) -> Iterator[Backend]:
    if request.param == "local":
        b: Backend = open_local(ws)
        try:
            yield b
        finally:
            b.close()
    else:
        srv = start_server(ws.root, extra_env={"RF_RETENTION_INTERVAL_S": "0"})
        try:
            yield HttpBackend(srv.url, srv.token, ws)
        finally:
            srv.stop()


def test_gc_answers_the_same_through_both_backends(backend: Backend) -> None:
    result = backend.gc(dry_run=True)
    assert isinstance(result, GcResult) and result.dry_run
    assert [f.kind for f in result.freed] == list(KINDS)
    assert result.retention["staging"] == {"days": 14, "max_executions": 50_000}


def test_the_server_applies_the_retention_in_the_background(ws: Any) -> None:
    set_retention(ws.root, "[retention.staging]\nmax_executions = 2\n")
    assert run_rf("agents", "deploy", "hello", cwd=ws.root).returncode == 0
    srv = start_server(ws.root, extra_env={"RF_RETENTION_INTERVAL_S": "0.2"})
    try:
        b = HttpBackend(srv.url, srv.token, ws)
        made = [b.invoke("staging", "hello", {"name": str(i)}).id for i in range(5)]
        deadline = time.monotonic() + 20
        while ids(b, "staging") != set(made[-2:]) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ids(b, "staging") == set(made[-2:]), "the newest 2 stay, the others were deleted"
        for ex_id in made[:3]:
            with pytest.raises(NotFound):
                b.get_trace(ex_id)
    finally:
        srv.stop()
