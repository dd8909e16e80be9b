"""Executions in progress and interrupted, and the wait for a worker — through a real
``rf serve`` and the real CLI.

A run that lasts more than about a second is listed as ``running`` while it runs (a
marker row, see rf.store.executions), then as what it ended as; a server killed during
a run records it as ``interrupted`` when it starts again; and ``queued_ms`` (the wait
for a worker) is recorded apart from ``duration_ms`` (the run), the two adding up to
the wall time.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import ServerProc, run_rf, run_rf_here, start_server, write_agent

SLEEPY_TOML = 'description = "Sleeps"\nentrypoint = "agent:handle"\ntimeout_s = 30\n'
SLEEPY_PY = (
    "import os, time\n"
    "def handle(input, ctx):\n"
    "    time.sleep(input.get('sleep', 0))\n"
    "    until = input.get('until')  # a file the test creates when it has seen the run in progress\n"
    "    deadline = time.monotonic() + 25\n"
    "    while until and not os.path.exists(until) and time.monotonic() < deadline:\n"
    "        time.sleep(0.05)\n"
    "    return {'slept': input.get('sleep', 0), 'n': input.get('n')}\n"
)


def deploy_sleepy(root: Path) -> None:
    write_agent(root, "sleepy", SLEEPY_PY, SLEEPY_TOML)
    r = run_rf_here("agents", "deploy", "sleepy", "-m", "sleepy", cwd=root)
    assert r.returncode == 0, r.stderr


def invoke(url: str, payload: dict[str, Any], answers: list[dict[str, Any]]) -> threading.Thread:
    """POST to the staging endpoint in a thread; the answer goes into *answers*."""

    def go() -> None:
        try:
            r = httpx.post(f"{url}/staging/agents/sleepy", json={"input": payload}, timeout=60)
        except httpx.HTTPError as exc:  # the server was killed under it
            answers.append({"status": "no answer", "error": str(exc)})
        else:
            answers.append(r.json())

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread


def listed(root: Path, *args: str) -> list[dict[str, Any]]:
    r = run_rf_here("executions", "list", "--env", "staging", "--agent", "sleepy", "--json", *args, cwd=root)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def wait_for_running(root: Path, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [e for e in listed(root) if e["status"] == "running"]
        if running:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("no execution was listed as running")


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.rstrip("Z"))


def test_a_long_run_is_listed_as_running_then_as_what_it_ended(ws: Any, server: ServerProc) -> None:
    deploy_sleepy(ws.root)
    answers: list[dict[str, Any]] = []
    flag = ws.root / "let-it-end"  # the run lasts at least 3 s, and until the checks below are done
    thread = invoke(server.url, {"sleep": 3, "until": str(flag)}, answers)
    running = wait_for_running(ws.root)
    assert running["ended_at"] == "" and running["output"] is None
    assert running["input"] == {"sleep": 3, "until": str(flag)}
    assert running["queued_ms"] >= 0 and running["duration_ms"] >= 0
    # One execution, one id: `rf executions show` and the API show it running too.
    shown = run_rf("executions", "show", running["id"], cwd=ws.root)
    assert shown.returncode == 0 and "running" in shown.stdout and "queued" in shown.stdout, shown.stderr
    assert "still running" in shown.stdout
    api = httpx.get(f"{server.url}/api/executions/{running['id']}",
                    headers={"Authorization": f"Bearer {server.token}"}).json()
    assert api["status"] == "running"
    only_running = listed(ws.root, "--status", "running")
    assert [e["id"] for e in only_running] == [running["id"]]
    flag.touch()
    thread.join(30)
    assert answers and answers[0]["status"] == "succeeded" and answers[0]["execution_id"] == running["id"]
    after = listed(ws.root)
    assert [(e["id"], e["status"]) for e in after] == [(running["id"], "succeeded")]  # the final row, alone
    assert after[0]["duration_ms"] >= 3000 and after[0]["output"] == {"slept": 3, "n": None}
    assert listed(ws.root, "--status", "running") == []
    table = run_rf_here("executions", "list", "--env", "staging", cwd=ws.root)
    assert "succeeded" in table.stdout and "running" not in table.stdout


def test_a_run_cut_short_by_a_server_crash_is_recorded_as_interrupted(ws: Any) -> None:
    deploy_sleepy(ws.root)
    srv = start_server(ws.root)
    try:
        answers: list[dict[str, Any]] = []
        invoke(srv.url, {"sleep": 6}, answers)
        running = wait_for_running(ws.root)
        os.kill(srv.pid, signal.SIGKILL)  # no clean stop: nothing gets to record the end
        srv.proc.wait(10)
    finally:
        srv.stop()
    # A crash leaves .rf/server.json behind (the next server would remove it as stale);
    # removed here so start_server waits for the new one.
    (ws.root / ".rf" / "server.json").unlink(missing_ok=True)
    again = start_server(ws.root)
    try:
        found = listed(ws.root)
        assert [(e["id"], e["status"]) for e in found] == [(running["id"], "interrupted")]
        ex = found[0]
        assert ex["error_type"] == "interrupted" and "server stopped during this execution" in ex["error"]
        assert ex["input"] == {"sleep": 6} and ex["ended_at"] and ex["output"] is None
        shown = run_rf("executions", "show", running["id"], cwd=ws.root)
        assert "interrupted" in shown.stdout and "killed or crashed" in shown.stdout
        assert listed(ws.root, "--status", "interrupted")[0]["id"] == running["id"]
        trace = run_rf_here("traces", "show", running["id"], "--json", cwd=ws.root)
        assert trace.returncode == 0 and json.loads(trace.stdout)["spans"][0]["status"] == "error"
        # The agent still answers; nothing is left running.
        r = httpx.post(f"{again.url}/staging/agents/sleepy", json={"input": {"sleep": 0}}, timeout=30)
        assert r.json()["status"] == "succeeded"
        assert listed(ws.root, "--status", "running") == []
    finally:
        again.stop()
    # A clean restart finds nothing more to mark.
    later = start_server(ws.root)
    try:
        assert [e["status"] for e in listed(ws.root)] == ["succeeded", "interrupted"]
    finally:
        later.stop()


def test_time_waiting_for_a_worker_is_queued_ms_not_duration(ws: Any, server: ServerProc) -> None:
    deploy_sleepy(ws.root)
    # Two warm workers (the pool's limit per agent and commit), so no cold start below.
    warm: list[dict[str, Any]] = []
    for thread in [invoke(server.url, {"sleep": 0.5}, warm) for _ in range(2)]:
        thread.join(30)
    answers: list[dict[str, Any]] = []
    started = time.monotonic()
    threads = [invoke(server.url, {"sleep": 1, "n": n}, answers) for n in range(4)]
    for thread in threads:
        thread.join(30)
    wall_ms = (time.monotonic() - started) * 1000
    assert len(answers) == 4 and all(a["status"] == "succeeded" for a in answers), answers
    ids = {a["execution_id"] for a in answers}
    runs = sorted((e for e in listed(ws.root) if e["id"] in ids), key=lambda e: e["queued_ms"])
    assert len(runs) == 4
    for e in runs:
        assert 950 <= e["duration_ms"] < 1800, e  # the run alone: one sleep, never two
        # started (arrival) + queued + duration = ended
        total = (at(e["ended_at"]) - at(e["started_at"])).total_seconds() * 1000
        assert abs(total - (e["queued_ms"] + e["duration_ms"])) < 5, e
    assert [e["queued_ms"] < 300 for e in runs] == [True, True, False, False], runs
    assert all(e["queued_ms"] >= 800 for e in runs[2:]), runs  # waited for a busy worker...
    for e in runs[2:]:  # ...until one of the first two ended: its run began then, not later
        began = at(e["started_at"]).timestamp() * 1000 + e["queued_ms"]
        assert min(abs(began - at(r["ended_at"]).timestamp() * 1000) for r in runs[:2]) < 250, runs
    assert wall_ms >= max(e["queued_ms"] + e["duration_ms"] for e in runs) - 50
    # Shown by the CLI and in the trace (a runtime span queue.wait).
    shown = run_rf("executions", "show", runs[3]["id"], cwd=ws.root)
    assert "every worker of the agent was busy" in shown.stdout, shown.stdout
    trace = json.loads(run_rf_here("traces", "show", runs[3]["id"], "--json", cwd=ws.root).stdout)
    waits = [s for s in trace["spans"] if s["name"] == "queue.wait"]
    assert len(waits) == 1 and waits[0]["kind"] == "runtime"
    assert abs((waits[0]["end_ns"] - waits[0]["start_ns"]) / 1e6 - runs[3]["queued_ms"]) < 50
    quick = json.loads(run_rf_here("traces", "show", runs[0]["id"], "--json", cwd=ws.root).stdout)
    assert not [s for s in quick["spans"] if s["name"] == "queue.wait"]
    table = run_rf_here("executions", "list", "--env", "staging", cwd=ws.root).stdout
    assert "queued" in table.splitlines()[1]


def test_without_a_server_the_first_read_records_what_a_dead_process_left_running(ws: Any) -> None:
    """The local backend (no server) owns the store for its command: markers of another
    process are dead ones, and its first read of executions records them as interrupted."""
    from rf.ids import datetime_of_ns, new_id
    from rf.store import Store

    ex_id = new_id("ex")
    now = time.time_ns()
    with Store.open(ws.db_path) as store:
        store.writer.put("running_executions", (
            ex_id, "production", "sleepy", "c0ffee", "trigger:tr_1", "s-1", '{"q": 1}',
            datetime_of_ns(now - 5_000_000_000), datetime_of_ns(now - 4_000_000_000), datetime_of_ns(now),
            "1:deadbeef",  # another process's marker
        ))
    r = run_rf("executions", "list", "--env", "production", "--json", cwd=ws.root)
    found = json.loads(r.stdout)
    assert [(e["id"], e["status"], e["session_id"], e["input"]) for e in found] == [
        (ex_id, "interrupted", "s-1", {"q": 1})]
    assert 950 <= found[0]["queued_ms"] <= 1050 and found[0]["duration_ms"] >= 4000
    assert run_rf("executions", "list", "--env", "production", "--status", "running", "--json",
                  cwd=ws.root).stdout.strip() == "[]"
    with Store.open(ws.db_path) as store:  # recorded once, and no marker is left
        assert store.query("SELECT count(*) FROM running_executions") == [(0,)]
        assert store.query("SELECT count(*) FROM executions WHERE id = ?", [ex_id]) == [(1,)]


def test_in_process_runs_report_their_wait_too(ws: Any) -> None:
    """The synchronous path (rf invoke without a server, triggers, rf test): WorkerPool.run
    times its wait for a worker like arun does."""
    from rf.config import snapshot_dir
    from rf.services import Services
    from rf.store import Store

    write_agent(ws.root, "sleepy", SLEEPY_PY, SLEEPY_TOML)
    with Store.open(ws.db_path) as store:
        services = Services(store, ws)
        try:
            services.deploy("sleepy", snapshot_dir(ws.agents_dir / "sleepy"))
            results: list[Any] = []

            def run(seconds: float) -> None:
                results.append(services.invoke("staging", "sleepy", {"sleep": seconds}))

            warm = [threading.Thread(target=run, args=(0.3,)) for _ in range(2)]
            for thread in warm:
                thread.start()
            for thread in warm:
                thread.join(30)
            results.clear()
            threads = [threading.Thread(target=run, args=(0.6,)) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            last = max(results, key=lambda e: e.queued_ms)
            assert 450 <= last.queued_ms < 1200 and 550 <= last.duration_ms < 1200, last
            spans = services.get_trace(last.id).spans
            assert [s.name for s in spans if s.kind == "runtime"] == ["queue.wait"]
            assert services.list_executions("staging", status="running") == []
        finally:
            services.close()
