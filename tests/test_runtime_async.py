"""WorkerPool.arun: the server's event-loop path gives the same results as run()."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from rf.runtime.pool import RunRequest, WorkerPool

CODE = """
import os, time

def echo(input, ctx):
    return {"echo": input, "pid": os.getpid()}

def boom(input, ctx):
    raise ValueError("nope")

def hang(input, ctx):
    while True:
        time.sleep(0.01)

def die(input, ctx):
    os._exit(3)

def ask(input, ctx):
    return ctx.call_host("double", n=input)
"""


def req(value: Any = None) -> RunRequest:
    return RunRequest(execution_id="ex-a", env="staging", agent="demo", input=value)


def test_arun_matches_run(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "agent.py").write_text(CODE)
    pool = WorkerPool(max_workers_per_key=2)

    def host(method: str, params: dict[str, Any]) -> Any:
        assert method == "double"
        return params["n"] * 2

    async def scenario() -> None:
        key = ("staging", "demo", "c1")
        first = await pool.arun(key, code, "agent:echo", req(1))  # cold: falls back to a thread
        warm = await pool.arun(key, code, "agent:echo", req(2))  # warm: driven by the event loop
        assert first.output["echo"] == 1 and warm.output["echo"] == 2
        assert warm.output["pid"] == first.output["pid"]  # the warm worker was reused
        many = await asyncio.gather(*(pool.arun(key, code, "agent:echo", req(i)) for i in range(20)))
        assert [r.output["echo"] for r in many] == list(range(20))
        for entry, check in (
            ("agent:boom", lambda r: r.status == "failed" and "ValueError: nope" in (r.error or "")),
            ("agent:hang", lambda r: r.status == "failed" and r.error_type == "timeout"),
            ("agent:die", lambda r: r.status == "failed" and r.error_type in ("exit", "crash")),
        ):
            k = ("staging", "demo", entry)
            await pool.arun(k, code, entry, req(), timeout_s=1.0)  # cold
            result = await pool.arun(k, code, entry, req(), timeout_s=1.0)  # warm path, if the worker survived
            assert check(result), (entry, result)
        k = ("staging", "demo", "ask")
        await pool.arun(k, code, "agent:ask", req(1), host=host)
        asked = await pool.arun(k, code, "agent:ask", req(21), host=host)
        assert asked.output == 42
        again = await pool.arun(key, code, "agent:echo", req("after"))
        assert again.status == "succeeded"

    try:
        asyncio.run(scenario())
    finally:
        pool.close()


SLOW = """
import time

def slow(input, ctx):
    time.sleep(0.02)
    return input
"""


def test_waiting_calls_are_woken_one_per_free_worker_and_none_is_lost(tmp_path: Path) -> None:
    """More concurrent calls than workers: the others wait on the event loop; each freed
    worker wakes one of them. Calls cancelled while waiting (a client that went away) do not
    strand the rest, and a full pool (max_total_workers) frees room for another key."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "agent.py").write_text(SLOW)
    pool = WorkerPool(max_workers_per_key=1, max_total_workers=2)
    a, b, c = (("staging", "demo", name) for name in ("a", "b", "c"))

    async def scenario() -> None:
        for key in (a, b):
            assert (await pool.arun(key, code, "agent:slow", req(0))).status == "succeeded"  # warm
        calls = [asyncio.ensure_future(pool.arun(key, code, "agent:slow", req(i))) for i in range(12) for key in (a, b)]
        await asyncio.sleep(0.005)
        cancelled = [calls[5], calls[9], calls[14]]
        for call in cancelled:
            call.cancel()
        done = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 30)
        kept = [r for call, r in zip(calls, done, strict=True) if call not in cancelled]
        assert all(getattr(r, "status", None) == "succeeded" for r in kept), kept
        assert len(kept) == 21 and not pool._async_waiters
        # The pool is full (a and b have a worker each): c must wait for room, then run.
        third = await asyncio.wait_for(pool.arun(c, code, "agent:slow", req("c")), 30)
        assert third.status == "succeeded" and third.output == "c"

    try:
        asyncio.run(scenario())
    finally:
        pool.close()


def test_a_worker_handed_to_a_waiting_call_that_is_cancelled_is_not_lost(tmp_path: Path) -> None:
    """A finishing run hands its worker straight to the next call waiting on the loop and, for
    a small request, writes that request to the worker at once (it starts without waiting for
    the call's task to be scheduled). If that call is cancelled before it resumes, the worker is
    already running a request nobody will read: it is stopped, never handed its answer to the
    next call, and room is made for a new worker. A large request is not written ahead."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "agent.py").write_text(SLOW)
    pool = WorkerPool(max_workers_per_key=1, max_total_workers=2)
    key = ("staging", "demo", "a")

    async def scenario() -> None:
        assert (await pool.arun(key, code, "agent:slow", req(0))).status == "succeeded"  # warm
        with pool._cond:
            worker = pool._take_idle(key, str(code), "agent:slow", [])
        assert worker is not None and worker.busy
        waiting = asyncio.ensure_future(pool.arun(key, code, "agent:slow", req(1)))
        await asyncio.sleep(0.01)
        assert pool._async_waiters.get(key)  # it waits for the busy worker
        pool._release(worker, reusable=True)  # handed over to the waiting call, request written...
        assert worker.busy and not pool._async_waiters and worker.presend is not None
        waiting.cancel()  # ...which goes away before it runs
        assert (await asyncio.gather(waiting, return_exceptions=True))[0].__class__ is asyncio.CancelledError
        again = await asyncio.wait_for(pool.arun(key, code, "agent:slow", req(2)), 30)
        assert again.status == "succeeded" and again.output == 2 and again.worker_pid != worker.pid
        assert worker not in pool._idle and worker.proc.wait(10) is not None

        # A request larger than a pipe's atomic write waits for its own task to send it.
        with pool._cond:
            second = pool._take_idle(key, str(code), "agent:slow", [])
        assert second is not None
        big = "x" * 10_000
        waiting = asyncio.ensure_future(pool.arun(key, code, "agent:slow", req(big)))
        await asyncio.sleep(0.01)
        pool._release(second, reusable=True)
        assert second.busy and second.presend is None
        result = await asyncio.wait_for(waiting, 30)
        assert result.status == "succeeded" and result.output == big and result.worker_pid == second.pid

    try:
        asyncio.run(scenario())
    finally:
        pool.close()


MAYBE_HANG = """
import time

def handle(input, ctx):
    if input == "hang":
        time.sleep(60)
    return input
"""


def test_a_warm_run_on_the_event_loop_times_out_and_the_pool_recovers(tmp_path: Path) -> None:
    """The loop path's deadline: a warm worker that does not answer in timeout_s is killed,
    the run fails as a timeout (within a tick of the deadline), and the next run works."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "agent.py").write_text(MAYBE_HANG)
    pool = WorkerPool(max_workers_per_key=1)
    key = ("staging", "demo", "h")

    async def scenario() -> None:
        assert (await pool.arun(key, code, "agent:handle", req("warm"))).output == "warm"
        started = time.monotonic()
        hung, fine = await asyncio.gather(
            pool.arun(key, code, "agent:handle", req("hang"), timeout_s=0.5),
            pool.arun(key, code, "agent:handle", req("after"), timeout_s=30),  # waits for the worker
        )
        assert hung.status == "failed" and hung.error_type == "timeout", hung
        assert time.monotonic() - started < 20
        assert fine.status == "succeeded" and fine.output == "after"
        assert fine.worker_pid != hung.worker_pid  # the hung worker was killed
        assert not pool._async_waiters

    try:
        asyncio.run(scenario())
    finally:
        pool.close()
