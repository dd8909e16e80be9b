"""Tests for rf.runtime: real worker subprocesses, no mocks."""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rf.errors import InvalidAgent, NotFound, RfError
from rf.runtime.check import validate_agent_code
from rf.runtime.context import Context
from rf.runtime.pool import RunRequest, RunResult, WorkerPool
from rf.runtime.protocol import FrameReader, FrameTooLarge, frame

KEY = ("staging", "demo", "c1")


def write_agent(directory: Path, source: str, name: str = "agent.py") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip())
    return directory


def request(value: Any = None, *, stream: bool = False, session_id: str | None = None) -> RunRequest:
    return RunRequest(
        execution_id="ex-1",
        env="staging",
        agent="demo",
        input=value,
        session_id=session_id,
        stream=stream,
    )


def alive(pid: int, wait_s: float = 3.0) -> bool:
    """Whether ``pid`` still runs after up to ``wait_s`` (a kill is not instant on a busy machine)."""
    deadline = time.monotonic() + wait_s
    while _alive(pid):
        if time.monotonic() > deadline:
            return True
        time.sleep(0.02)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def pool() -> Iterator[WorkerPool]:
    p = WorkerPool(max_workers_per_key=2, max_message_bytes=1024 * 1024)
    try:
        yield p
    finally:
        p.close()


AGENT = """
import asyncio
import os
import sys
import time

from rf import Context as PublicContext
from rf.runtime.context import Context


def handle(input, ctx):
    print("hello from print", input)
    sys.stderr.write("to stderr\\n")
    os.write(1, b"raw fd write\\n")
    ctx.logger.warning("careful %s", 42)
    return {
        "input": input,
        "is_context": isinstance(ctx, Context) and PublicContext is Context,
        "env": ctx.env,
        "agent": ctx.agent,
        "execution_id": ctx.execution_id,
        "session_id": ctx.session_id,
        "tuple": (1, 2),
        "stdin": sys.stdin.read(),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
    }


async def ahandle(input, ctx):
    await asyncio.sleep(0.01)
    return {"async": input}


def gen(input, ctx):
    for i in range(input):
        yield {"i": i}


async def agen(input, ctx):
    for i in range(input):
        await asyncio.sleep(0)
        yield i * 10


def stream_ack(input, ctx):
    yield "first"
    # The host answers with how many chunks it has received so far, so this
    # proves chunk "first" reached on_chunk while the generator was running.
    yield ctx.call_host("count")


def pid(input, ctx):
    return os.getpid()


def slow(input, ctx):
    time.sleep(input)
    return os.getpid()


def add(input, ctx):
    return ctx.call_host("add", a=input[0], b=input[1])


def lookup(input, ctx):
    from rf.errors import NotFound
    try:
        ctx.call_host("lookup", name=input)
    except NotFound as exc:
        return {"caught": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    return "not raised"


def lookup_uncaught(input, ctx):
    return ctx.call_host("lookup", name=input)


def boom(input, ctx):
    raise ValueError(f"bad id {input}")


def exit3(input, ctx):
    sys.exit(3)


def hard_exit(input, ctx):
    os._exit(1)


def segfault(input, ctx):
    import ctypes
    ctypes.string_at(0)


def forever(input, ctx):
    print("about to loop")
    while True:
        pass


def huge(input, ctx):
    return "x" * (2 * 1024 * 1024)


def not_json(input, ctx):
    return {"s": {1, 2}}


def nan(input, ctx):
    return float("nan")


def noisy(input, ctx):
    for i in range(5000):
        print("line", i, "x" * 40)
    return "done"


def dispatch(input, ctx):
    # One entrypoint for many behaviours, so tests can check that a worker
    # survives (or not) from one run to the next.
    return globals()[input["fn"]](input["arg"], ctx)
"""


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    return write_agent(tmp_path / "code", AGENT)


def run(
    pool: WorkerPool, agent_dir: Path, fn: str, value: Any = None, *, direct: bool = False, **kwargs: Any
) -> RunResult:
    """Run *fn* from AGENT through the ``dispatch`` entrypoint on KEY, or with
    *direct* as the entrypoint itself (on a key of its own)."""
    timeout_s = kwargs.pop("timeout_s", 10.0)
    stream = kwargs.pop("stream", False)
    session_id = kwargs.pop("session_id", None)
    if direct:
        key, entrypoint, req = (
            ("staging", "demo", fn),
            f"agent:{fn}",
            request(value, stream=stream, session_id=session_id),
        )
    else:
        key, entrypoint = KEY, "agent:dispatch"
        req = request({"fn": fn, "arg": value}, stream=stream, session_id=session_id)
    return pool.run(key, agent_dir, entrypoint, req, timeout_s=timeout_s, **kwargs)


# -- handlers -------------------------------------------------------------------


def test_sync_handler_ctx_and_logs(pool: WorkerPool, agent_dir: Path) -> None:
    result = run(pool, agent_dir, "handle", {"q": 1}, session_id="s-9", direct=True)
    assert result.status == "succeeded", result
    out = result.output
    assert out["input"] == {"q": 1}
    assert out["is_context"] is True
    assert (out["env"], out["agent"], out["execution_id"], out["session_id"]) == (
        "staging",
        "demo",
        "ex-1",
        "s-9",
    )
    assert out["tuple"] == [1, 2]
    assert out["stdin"] == ""
    # A neutral, empty directory of its own, never the agent's (read-only, verified) code dir.
    assert out["cwd"] != os.path.realpath(agent_dir) and os.path.basename(out["cwd"]).startswith("rf-run-")
    assert out["pid"] == result.worker_pid
    assert "hello from print {'q': 1}" in result.logs
    assert "to stderr" in result.logs
    assert "raw fd write" in result.logs
    assert "WARNING careful 42" in result.logs
    assert result.error is None and result.traceback is None
    assert result.duration_ms > 0
    # Logs belong to one execution: a second run does not repeat the first's.
    again = run(pool, agent_dir, "handle", 2, direct=True)
    assert again.output["pid"] == out["pid"]
    assert "hello from print 2" in again.logs
    assert "{'q': 1}" not in again.logs


def test_async_handler(pool: WorkerPool, agent_dir: Path) -> None:
    result = run(pool, agent_dir, "ahandle", 5, direct=True)
    assert result.status == "succeeded", result
    assert result.output == {"async": 5}
    assert run(pool, agent_dir, "ahandle", 6, direct=True).output == {"async": 6}
    assert run(pool, agent_dir, "ahandle", 7).output == {"async": 7}


def test_generators_collect_chunks(pool: WorkerPool, agent_dir: Path) -> None:
    assert run(pool, agent_dir, "gen", 3, direct=True).output == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert run(pool, agent_dir, "agen", 3, direct=True).output == [0, 10, 20]
    assert run(pool, agent_dir, "agen", 2).output == [0, 10]


def test_streaming_delivers_chunks_in_order(pool: WorkerPool, agent_dir: Path) -> None:
    received: list[Any] = []
    result = run(pool, agent_dir, "agen", 4, stream=True, on_chunk=received.append, direct=True)
    assert result.status == "succeeded", result
    assert received == [0, 10, 20, 30]
    assert result.output == [0, 10, 20, 30]

    seen: list[Any] = []
    result = run(
        pool,
        agent_dir,
        "stream_ack",
        stream=True,
        on_chunk=seen.append,
        host=lambda method, params: len(seen),
    )
    assert result.status == "succeeded", result
    assert seen == ["first", 1]


def test_stream_consumer_failure_fails_run(pool: WorkerPool, agent_dir: Path) -> None:
    def consumer(chunk: Any) -> None:
        raise ConnectionError("client went away")

    result = run(pool, agent_dir, "gen", 3, stream=True, on_chunk=consumer)
    assert result.status == "failed"
    assert result.error_type == "protocol"
    assert "client went away" in (result.error or "")
    assert run(pool, agent_dir, "gen", 1).output == [{"i": 0}]


# -- host calls -----------------------------------------------------------------


def test_host_calls_round_trip(pool: WorkerPool, agent_dir: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def host(method: str, params: dict[str, Any]) -> Any:
        calls.append((method, params))
        if method == "add":
            return params["a"] + params["b"]
        if method == "lookup":
            raise NotFound(f"no prompt {params['name']!r}", "create it first")
        raise RuntimeError("secret internals")

    result = run(pool, agent_dir, "add", [2, 3], host=host)
    assert result.status == "succeeded", result
    assert result.output == 5
    assert calls == [("add", {"a": 2, "b": 3})]

    caught = run(pool, agent_dir, "lookup", "greeting", host=host)
    assert caught.output == {
        "caught": "NotFound",
        "message": "no prompt 'greeting'",
        "hint": "create it first",
    }

    uncaught = run(pool, agent_dir, "lookup_uncaught", "greeting", host=host)
    assert uncaught.status == "failed"
    assert uncaught.error_type == "exception"
    assert uncaught.error is not None
    assert uncaught.error.startswith("NotFound: no prompt 'greeting' (agent.py:")


def test_host_errors_do_not_leak(pool: WorkerPool, agent_dir: Path) -> None:
    def host(method: str, params: dict[str, Any]) -> Any:
        raise RuntimeError("secret internals")

    result = run(pool, agent_dir, "add", [1, 1], host=host)
    assert result.status == "failed"
    assert "host service 'add' failed (RuntimeError)" in (result.error or "")
    assert "secret internals" not in (result.error or "") + (result.traceback or "")

    no_host = run(pool, agent_dir, "add", [1, 1])
    assert no_host.status == "failed"
    assert "no host services in this run" in (no_host.error or "")


def test_context_standalone() -> None:
    ctx = Context(env="staging", agent="a", execution_id="e", host=lambda m, p: (m, p))
    assert ctx.call_host("ping", x=1) == ("ping", {"x": 1})
    ctx._end()
    with pytest.raises(RfError, match="after execution e ended"):
        ctx.call_host("ping")
    with pytest.raises(RfError, match="no host services"):
        Context(env="staging", agent="a", execution_id="e").call_host("ping")


# -- failures -------------------------------------------------------------------


def test_exception_reports_file_and_line(pool: WorkerPool, agent_dir: Path) -> None:
    first = run(pool, agent_dir, "pid")
    result = run(pool, agent_dir, "boom", 7)
    assert result.status == "failed"
    assert result.error_type == "exception"
    line = AGENT.lstrip().splitlines().index('    raise ValueError(f"bad id {input}")') + 1
    assert result.error == f"ValueError: bad id 7 (agent.py:{line})"
    assert result.traceback is not None
    assert f'File "agent.py", line {line}, in boom' in result.traceback
    assert "ValueError: bad id 7" in result.traceback
    assert "rf/runtime" not in result.traceback
    # An exception does not cost the worker.
    after = run(pool, agent_dir, "pid")
    assert after.status == "succeeded"
    assert after.output == first.output


def test_sys_exit(pool: WorkerPool, agent_dir: Path) -> None:
    result = run(pool, agent_dir, "exit3")
    assert (result.status, result.error_type) == ("failed", "exit")
    assert result.error == "agent exited with code 3 (sys.exit)"
    assert run(pool, agent_dir, "pid").status == "succeeded"


def test_os_exit_replaces_worker(pool: WorkerPool, agent_dir: Path) -> None:
    before = run(pool, agent_dir, "pid").output
    result = run(pool, agent_dir, "hard_exit")
    assert (result.status, result.error_type) == ("failed", "exit")
    assert "agent exited with code 1" in (result.error or "")
    assert not alive(before)
    after = run(pool, agent_dir, "pid")
    assert after.status == "succeeded"
    assert after.output != before


def test_segfault_is_a_crash(pool: WorkerPool, agent_dir: Path) -> None:
    result = run(pool, agent_dir, "segfault")
    assert (result.status, result.error_type) == ("failed", "crash")
    assert result.error is not None and result.error.startswith("worker crashed (signal SIGSEGV")
    assert "agent.py:" in result.error
    assert result.traceback is not None and "Segmentation fault" in result.traceback
    assert run(pool, agent_dir, "pid").status == "succeeded"


def test_timeout_kills_worker_without_blocking_others(pool: WorkerPool, agent_dir: Path, tmp_path: Path) -> None:
    other_dir = write_agent(tmp_path / "other", "def handle(input, ctx):\n    return input\n")
    pool.run(("staging", "other", "c1"), other_dir, "agent:handle", request(0))  # warm it
    results: dict[str, RunResult] = {}

    def stuck() -> None:
        results["stuck"] = run(pool, agent_dir, "forever", timeout_s=1.0)

    thread = threading.Thread(target=stuck)
    thread.start()
    deadline = time.monotonic() + 10
    while pool.stats()["busy"] < 1 and time.monotonic() < deadline:  # the stuck run holds its worker
        time.sleep(0.01)
    quick = pool.run(("staging", "other", "c1"), other_dir, "agent:handle", request(1))
    assert quick.output == 1
    assert thread.is_alive()  # answered while the stuck run was still going: it did not wait for it
    thread.join(5)
    result = results["stuck"]
    assert (result.status, result.error_type) == ("failed", "timeout")
    assert result.error is not None and result.error.startswith("timed out after 1.0 s")
    assert "stuck at agent.py:" in result.error
    assert "about to loop" in result.logs
    assert result.worker_pid is not None and not alive(result.worker_pid)
    assert run(pool, agent_dir, "pid").status == "succeeded"


def test_huge_output(pool: WorkerPool, agent_dir: Path) -> None:
    result = run(pool, agent_dir, "huge")
    assert (result.status, result.error_type) == ("failed", "output")
    assert "too large" in (result.error or "")
    assert run(pool, agent_dir, "pid").status == "succeeded"


def test_frame_reader_refuses_oversized_frames() -> None:
    read_fd, write_fd = os.pipe()
    try:
        os.write(write_fd, frame(b'{"t":"x"}') + (10_000_000).to_bytes(4, "big"))
        reader = FrameReader(read_fd, 1000)
        assert reader.read(time.monotonic() + 1) == {"t": "x"}
        with pytest.raises(FrameTooLarge):
            reader.read(time.monotonic() + 1)
        with pytest.raises(TimeoutError):
            FrameReader(os.pipe()[0], 1000).read(time.monotonic() + 0.05)
    finally:
        os.close(read_fd)
        os.close(write_fd)


def test_non_serializable_output_keeps_worker(pool: WorkerPool, agent_dir: Path) -> None:
    before = run(pool, agent_dir, "pid").output
    result = run(pool, agent_dir, "not_json")
    assert (result.status, result.error_type) == ("failed", "output")
    assert result.error is not None
    assert result.error.startswith("output is not JSON-serializable:")
    assert "set" in result.error
    assert run(pool, agent_dir, "nan").error_type == "output"
    assert run(pool, agent_dir, "pid").output == before


def test_prints_do_not_corrupt_channel_and_logs_are_capped(pool: WorkerPool, agent_dir: Path) -> None:
    result = run(pool, agent_dir, "noisy")
    assert result.status == "succeeded", result.error
    assert result.output == "done"
    assert len(result.logs) < 70 * 1024
    assert "[logs truncated:" in result.logs
    assert result.logs.startswith("line 0 ")


def test_non_json_input(pool: WorkerPool, agent_dir: Path) -> None:
    result = run(pool, agent_dir, "pid", object())
    assert (result.status, result.error_type) == ("failed", "protocol")
    assert "input is not JSON-serializable" in (result.error or "")


def test_startup_errors(pool: WorkerPool, tmp_path: Path) -> None:
    broken = write_agent(tmp_path / "broken", "def handle(input, ctx):\n    return (\n")
    result = pool.run(KEY, broken, "agent:handle", request())
    assert (result.status, result.error_type) == ("failed", "exception")
    assert result.error is not None
    assert result.error.startswith("cannot import module 'agent' (agent.py:2: SyntaxError:")

    ok = write_agent(tmp_path / "ok", "def handle(input, ctx):\n    return 1\n")
    missing = pool.run(("staging", "demo", "c2"), ok, "agent:nope", request())
    assert missing.error == "entrypoint 'agent:nope': module 'agent' has no function 'nope'"
    bad = pool.run(("staging", "demo", "c3"), ok, "agent", request())
    assert bad.error_type == "exception" and "invalid entrypoint" in (bad.error or "")


# -- pool behaviour ---------------------------------------------------------------


def test_warm_workers_are_reused(pool: WorkerPool, agent_dir: Path) -> None:
    pool.warm(KEY, agent_dir, "agent:dispatch")
    stats = pool.stats()
    assert stats["workers"] == 1
    (warm_pid,) = stats["keys"]["staging/demo/c1"]["pids"]
    pids = {run(pool, agent_dir, "pid").output for _ in range(5)}
    assert pids == {warm_pid}
    pool.warm(KEY, agent_dir, "agent:dispatch")  # already has a worker: no-op
    assert pool.stats()["workers"] == 1


def test_concurrent_runs_use_up_to_max_workers_per_key(pool: WorkerPool, agent_dir: Path) -> None:
    results: list[RunResult] = []
    lock = threading.Lock()

    def go() -> None:
        r = run(pool, agent_dir, "slow", 0.3)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=go) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(results) == 5
    assert all(r.status == "succeeded" for r in results), results
    assert len({r.output for r in results}) == 2
    assert pool.stats()["workers"] == 2


def test_lru_eviction_and_retire(agent_dir: Path) -> None:
    p = WorkerPool(max_total_workers=2)
    try:
        pids = {}
        for commit in ("a", "b", "c"):
            key = ("staging", "demo", commit)
            pids[commit] = p.run(key, agent_dir, "agent:pid", request()).output
        stats = p.stats()
        assert stats["workers"] == 2
        assert set(stats["keys"]) == {"staging/demo/b", "staging/demo/c"}
        assert not alive(pids["a"])
        p.retire(lambda key: key[2] == "b")
        assert set(p.stats()["keys"]) == {"staging/demo/c"}
        assert not alive(pids["b"])
    finally:
        p.close()


def test_idle_workers_expire(agent_dir: Path) -> None:
    p = WorkerPool(idle_ttl_s=0.2)
    try:
        pid = p.run(KEY, agent_dir, "agent:pid", request()).output
        deadline = time.monotonic() + 3
        while p.stats()["workers"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.stats()["workers"] == 0
        assert not alive(pid)
    finally:
        p.close()


def test_close_leaves_no_children(agent_dir: Path) -> None:
    p = WorkerPool()
    pids = [p.run(("staging", "demo", c), agent_dir, "agent:pid", request()).output for c in "xyz"]
    assert all(_alive(pid) for pid in pids)
    p.close()
    p.close()  # idempotent
    assert not any(alive(pid) for pid in pids)
    closed = p.run(KEY, agent_dir, "agent:pid", request())
    assert closed.status == "failed" and "closed" in (closed.error or "")


# -- validate_agent_code --------------------------------------------------------------


def test_validate_ok(tmp_path: Path) -> None:
    code = write_agent(tmp_path / "ok", "print('import-time print')\ndef handle(input, ctx):\n    return 1\n")
    validate_agent_code(code, "agent:handle", timeout_s=10)
    pkg = write_agent(tmp_path / "ok", "def run(input, ctx):\n    return 2\n", name="pkg/mod.py")
    (pkg / "pkg" / "__init__.py").write_text("")
    validate_agent_code(pkg, "pkg.mod:run", timeout_s=10)


@pytest.mark.parametrize(
    ("files", "entrypoint", "expected"),
    [
        ({"agent.py": "def handle(i, c): pass\n"}, "agent", "invalid entrypoint 'agent'"),
        ({"agent.py": "def handle(i, c): pass\n"}, "agent:1x", "invalid entrypoint"),
        (
            {"agent.py": "x = 1\n\ndef handle(input, ctx)\n    return 1\n"},
            "agent:handle",
            "cannot import module 'agent' (agent.py:3: SyntaxError: ",
        ),
        (
            {"agent.py": "def handle(i, c): pass\n"},
            "missing:handle",
            "entrypoint 'missing:handle': no module 'missing' in ",
        ),
        (
            {"agent.py": "def other(i, c): pass\n"},
            "agent:handle",
            "entrypoint 'agent:handle': module 'agent' has no function 'handle'",
        ),
        (
            {"agent.py": "handle = 42\n"},
            "agent:handle",
            "entrypoint 'agent:handle': 'handle' in module 'agent' is not callable (it is a int)",
        ),
        (
            {"agent.py": "import helper\n", "helper.py": "x = 1\ny = 2\nraise KeyError('cfg')\n"},
            "agent:handle",
            "cannot import module 'agent' (helper.py:3: KeyError: 'cfg')",
        ),
        (
            {"agent.py": "import not_installed_dependency_xyz\n"},
            "agent:handle",
            "(agent.py:1: ModuleNotFoundError: No module named 'not_installed_dependency_xyz')",
        ),
        (
            {"json.py": "def handle(i, c): pass\n"},
            "json:handle",
            "module 'json' is not in ",
        ),
        ({"agent.py": "import os\nos._exit(4)\n"}, "agent:handle", "ended the Python process with exit code 4"),
        (
            {"agent.py": "import ctypes\nctypes.string_at(0)\n"},
            "agent:handle",
            "by a crash (signal SIGSEGV at agent.py:2)",
        ),
    ],
)
def test_validate_errors(tmp_path: Path, files: dict[str, str], entrypoint: str, expected: str) -> None:
    for name, source in files.items():
        write_agent(tmp_path / "code", source, name=name)
    with pytest.raises(InvalidAgent) as info:
        validate_agent_code(tmp_path / "code", entrypoint, timeout_s=10)
    assert expected in info.value.message
    assert info.value.hint


def test_validate_missing_dir_and_hang(tmp_path: Path) -> None:
    with pytest.raises(InvalidAgent, match="does not exist"):
        validate_agent_code(tmp_path / "nope", "agent:handle")
    code = write_agent(tmp_path / "hang", "import time\nwhile True:\n    time.sleep(0.01)\n")
    with pytest.raises(InvalidAgent, match=r"did not finish within 0.5 s \(stuck at agent.py:3\)"):
        validate_agent_code(code, "agent:handle", timeout_s=0.5)
