"""Bounded concurrency: a worker budget per environment, a bound on the requests waiting
for a worker (429 with Retry-After beyond it), and host calls on their own threads.

Real worker subprocesses; the server test runs a real `rf serve`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import run_rf, run_rf_here, start_server, write_agent
from rf.errors import TooBusy
from rf.runtime.pool import PoolLimits, RunRequest, WorkerPool

CODE = """
import os, pathlib, time

def pid(input, ctx):
    return os.getpid()

def gate(input, ctx):
    # waits until the test creates the file named by the input (the test's "release" signal)
    flag = pathlib.Path(input)
    while not flag.exists():
        time.sleep(0.005)
    return "released"

def ask(input, ctx):
    return ctx.call_host("double", n=input)
"""


def req(env: str, value: Any = None) -> RunRequest:
    return RunRequest(execution_id="ex-limits", env=env, agent="demo", input=value)


@pytest.fixture
def code(tmp_path: Path) -> Path:
    d = tmp_path / "code"
    d.mkdir()
    (d / "agent.py").write_text(CODE)
    return d


def test_staging_work_never_evicts_a_production_worker(code: Path) -> None:
    """One worker in all per environment: staging runs of other agents evict each other,
    never production's warm worker (before: one budget for both, and they evicted it)."""
    pool = WorkerPool(max_workers_per_key=1, max_total_workers=1)
    try:
        prod = pool.run(("production", "demo", "c1"), code, "agent:pid", req("production"))
        for agent in ("a", "b", "c"):
            r = pool.run(("staging", agent, "c1"), code, "agent:pid", req("staging"))
            assert r.status == "succeeded"
        again = pool.run(("production", "demo", "c1"), code, "agent:pid", req("production"))
        assert again.output == prod.output  # the same warm process
        stats = pool.stats()
        assert sorted(k.split("/")[0] for k in stats["keys"]) == ["production", "staging"]
    finally:
        pool.close()


def test_per_environment_limits_are_separate(code: Path) -> None:
    pool = WorkerPool(limits={"staging": PoolLimits(max_workers_per_agent=1, max_workers=1),
                              "production": PoolLimits(max_workers_per_agent=3, max_workers=3)})
    assert pool.limits_of("staging").max_workers == 1 and pool.limits_of("production").max_workers == 3
    with pytest.raises(ValueError, match="at least 1"):
        WorkerPool(limits={"staging": PoolLimits(max_workers=0)})
    pool.close()


def test_too_many_waiting_requests_are_refused_with_too_busy(code: Path, tmp_path: Path) -> None:
    """One worker, one request may wait: the next one is refused at once (TooBusy, 429),
    on the event loop's path and on a thread's; the others complete when released."""
    flag = tmp_path / "go"
    pool = WorkerPool(max_workers_per_key=1, max_waiting=1)
    key = ("production", "demo", "gate")

    async def scenario() -> None:
        warm = await pool.arun(("production", "demo", "pid"), code, "agent:pid", req("production"))
        assert warm.status == "succeeded"
        running = asyncio.ensure_future(pool.arun(key, code, "agent:gate", req("production", str(flag))))
        while pool.stats()["busy"] < 1:  # the first run holds the only worker of the key
            await asyncio.sleep(0.005)
        waiting = asyncio.ensure_future(pool.arun(key, code, "agent:gate", req("production", str(flag))))
        while pool._waiting.get("production", 0) < 1:
            await asyncio.sleep(0.005)
        with pytest.raises(TooBusy) as refused:
            await pool.arun(key, code, "agent:gate", req("production", str(flag)))
        assert refused.value.http_status == 429 and "max_waiting" in (refused.value.hint or "")
        # a thread's run() is held to the same bound
        with pytest.raises(TooBusy):
            await asyncio.to_thread(pool.run, key, code, "agent:gate", req("production", str(flag)))
        # the other environment has its own budget and queue
        other = await pool.arun(("staging", "demo", "pid"), code, "agent:pid", req("staging"))
        assert other.status == "succeeded"
        flag.touch()
        done = await asyncio.gather(running, waiting)
        assert [r.output for r in done] == ["released", "released"]
        assert pool._waiting.get("production", 0) == 0  # every wait was counted out again

    try:
        asyncio.run(scenario())
    finally:
        pool.close()


def test_host_calls_do_not_need_the_loops_default_executor(code: Path) -> None:
    """Blocking work that fills the event loop's default executor (streams, webhooks, cold
    starts) cannot starve a running execution's host calls: they have their own threads."""
    pool = WorkerPool(max_workers_per_key=1)
    key = ("production", "demo", "ask")
    release = threading.Event()

    def host(method: str, params: dict[str, Any]) -> Any:
        return params["n"] * 2

    async def scenario() -> None:
        cold = await pool.arun(key, code, "agent:ask", req("production", 1), host=host)
        assert cold.output == 2
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        blocker = loop.run_in_executor(None, release.wait, 30)  # the default executor is now full
        try:
            warm = await asyncio.wait_for(pool.arun(key, code, "agent:ask", req("production", 21), host=host,
                                                    timeout_s=10), 10)
            assert warm.status == "succeeded" and warm.output == 42
        finally:
            release.set()
            await blocker

    try:
        asyncio.run(scenario())
    finally:
        pool.close()


GATE_AGENT = """
import pathlib, time

def handle(input, ctx):
    flag = pathlib.Path(input["flag"])
    while not flag.exists():
        time.sleep(0.005)
    return "released"
"""


def test_a_full_queue_answers_429_with_retry_after_over_http(ws: Any, tmp_path: Path) -> None:
    root = ws.root
    toml = (root / "rf.toml").read_text()
    (root / "rf.toml").write_text(toml + "\n[runtime.production]\nmax_workers_per_agent = 1\nmax_waiting = 1\n")
    write_agent(root, "gate", code=GATE_AGENT, toml='description = "waits for a file"\n')
    for args in (("agents", "deploy", "gate"), ("agents", "promote", "gate", "--yes")):
        r = run_rf_here(*args, cwd=root)
        assert r.returncode == 0, r.stderr
    flag = tmp_path / "go"
    srv = start_server(root)
    try:
        url = f"{srv.url}/production/agents/gate"
        body = {"input": {"flag": str(flag)}}
        with httpx.Client(timeout=30) as client:
            assert client.post(f"{srv.url}/staging/agents/gate", json={"input": {"flag": str(tmp_path)}}
                               ).status_code == 200  # warm-up elsewhere: staging has its own budget
        with concurrent.futures.ThreadPoolExecutor(3) as threads:
            # one runs, one waits, one is refused: whichever arrives last gets the 429
            calls = [threads.submit(httpx.post, url, json=body, timeout=60) for _ in range(3)]
            done, _ = concurrent.futures.wait(calls, timeout=30, return_when=concurrent.futures.FIRST_COMPLETED)
            assert done, "no request was refused while one ran and one waited"
            refused = next(iter(done)).result()
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"] == "1"
            error = refused.json()["error"]
            assert error["code"] == "too_busy" and "max_waiting" in error["hint"]
            # staging answers meanwhile (its own workers and queue)
            staged = httpx.post(f"{srv.url}/staging/agents/gate", json={"input": {"flag": str(tmp_path)}},
                                timeout=30)
            assert staged.status_code == 200
            flag.touch()
            statuses = sorted(c.result().status_code for c in calls)
            assert statuses == [200, 200, 429]
    finally:
        srv.stop()


def test_runtime_table_is_checked(ws: Any) -> None:
    root = ws.root
    toml = (root / "rf.toml").read_text()
    (root / "rf.toml").write_text(toml + "\n[runtime.production]\nmax_worker = 4\n")
    r = run_rf("status", cwd=root)
    assert r.returncode != 0 and "max_worker" in r.stderr and "max_workers" in r.stderr
    (root / "rf.toml").write_text(toml + "\n[runtime.staging]\nmax_waiting = -1\n")
    r = run_rf_here("status", cwd=root)
    assert r.returncode != 0 and "max_waiting must be a whole number of at least 0" in r.stderr


def test_a_wait_for_a_worker_ends_with_the_runs_timeout(code: Path, tmp_path: Path) -> None:
    """Every worker of an agent busy for a run's whole timeout (callers waiting on children,
    say): the waiting run fails as a timeout instead of waiting for ever — on a thread and
    on the event loop — and the pool counts it out of the waiting requests."""
    flag = tmp_path / "go"
    pool = WorkerPool(max_workers_per_key=1)
    key = ("staging", "demo", "gate")

    async def scenario() -> None:
        holder = asyncio.ensure_future(pool.arun(key, code, "agent:gate", req("staging", str(flag)), timeout_s=30))
        while pool.stats()["busy"] < 1:
            await asyncio.sleep(0.005)
        waited = await pool.arun(key, code, "agent:gate", req("staging", str(flag)), timeout_s=0.3)
        assert (waited.status, waited.error_type) == ("failed", "timeout")
        assert "no worker of agent demo was free within 0.3 s" in (waited.error or "")
        assert waited.queue_wait is not None
        threaded = await asyncio.to_thread(pool.run, key, code, "agent:gate", req("staging", str(flag)),
                                           timeout_s=0.3)
        assert (threaded.status, threaded.error_type) == ("failed", "timeout")
        assert pool._waiting.get("staging", 0) == 0
        flag.touch()
        assert (await holder).output == "released"

    try:
        asyncio.run(scenario())
    finally:
        pool.close()
