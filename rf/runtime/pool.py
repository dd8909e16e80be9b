"""Warm worker subprocesses for agent code, kept in the host process.

Why out of process: agent code is arbitrary user Python. In a subprocess a
crash, ``sys.exit``/``os._exit``, segfault, endless loop or flood of output
fails one execution and the host carries on; the broken worker is killed and
the next run starts a fresh one. Workers never touch the database: what a
handler needs from the host it asks for over its pipe (``ctx.call_host``),
and :class:`WorkerPool` answers by calling ``host(method, params)`` in the
thread that called :meth:`WorkerPool.run`.

Why warm and pooled: starting Python and importing an agent takes tens of
milliseconds, a warm round trip a fraction of one. Workers are kept per key
``(env, agent, commit)``, so a new deployment never runs in a worker that
imported the old code, and reused for as long as they are healthy.

Concurrency: every worker serves one execution at a time. :meth:`run` is
thread-safe; each caller takes an idle worker of its key, starts one (up to
``max_workers_per_key``) or waits for one. A run blocks only its own thread,
in ``poll`` on its worker's pipe, so a handler that never returns delays
nobody else and is killed at its deadline.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from rf.errors import InvalidAgent, RfError, TooBusy
from rf.jsonfast import dumpb
from rf.runtime.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ENVELOPE_SLACK_BYTES,
    LOG_LIMIT_BYTES,
    NEED_MORE,
    PIECE_SINK,
    FrameReader,
    FrameTooLarge,
    ProtocolError,
    describe_size,
    frame,
    streams,
    write_all,
)
from rf.runtime.worker import parse_entrypoint, relative_path, truncated_logs

WorkerKey = tuple[str, str, str]  # (env, agent, commit_or_label)
HostHandler = Callable[[str, dict[str, Any]], Any]

_log = logging.getLogger(__name__)

#: The directory that contains the ``rf`` package; put on the worker's
#: PYTHONPATH so agent code can ``from rf import Context``.
RF_ROOT = str(Path(__file__).resolve().parents[2])

_REAP_WAIT_S = 5.0
_DUMP_WAIT_S = 0.1
_DUMP_START = re.compile(r"(?m)^(?:Fatal Python error: |Current thread 0x|Thread 0x)")
_DUMP_FRAME = re.compile(r'File "(.+?)", line (\d+)')


@dataclass
class RunRequest:
    """One execution to run.

    Handlers may be plain functions, ``async def``, generators or async
    generators. A generator's output is the list of what it yielded; with
    ``stream=True`` each item also reaches ``on_chunk`` as soon as it is
    yielded (a non-generator handler's return value is never chunked).
    """

    execution_id: str
    env: str  # "staging" | "production"
    agent: str
    input: Any  # JSON-able
    session_id: str | None = None
    stream: bool = False  # when True, chunks are delivered to on_chunk as they come
    #: The execution's root span id: the parent of custom spans opened outside any other
    #: (the worker sends them ready to store; see rf.services.span_rows).
    trace_root: str | None = None


@dataclass
class RunResult:
    """What happened. Failures are results, never exceptions, so a server can
    record them like successes."""

    status: str  # "succeeded" | "failed"
    output: Any = None  # JSON-able; for generators the list of chunks
    error: str | None = None  # one clear line
    error_type: str | None = None  # "exception" | "exit" | "crash" | "timeout" | "protocol" | "output"
    traceback: str | None = None  # the agent's traceback (or crash dump); None on success
    logs: str = ""  # stdout+stderr+ctx.logger lines of this execution, at most 64 KiB + marker
    duration_ms: float = 0.0
    worker_pid: int | None = None  # the worker that ran it (None if none started)
    #: Deferred ctx calls still pending when the handler returned (sent in its "done"
    #: message; replayed by the services before the execution is recorded).
    ops: Any = None
    #: Custom spans still pending then, as one JSON text of span rows (rf.services.span_rows).
    spans: Any = None
    #: ``(start_ns, end_ns, ok)`` (``time.time_ns()``) when this run waited for its worker to
    #: start and import the agent (a cold start; ``ok`` False if it could not); None when a
    #: warm worker took it at once.
    worker_start: tuple[int, int, bool] | None = None
    #: ``(start_ns, end_ns, what differed)`` when, before this run's new worker started, its
    #: code directory did not match the commit and was re-created from the store.
    code_repair: tuple[int, int, str] | None = None
    #: ``(start_ns, end_ns)`` (``time.time_ns()``) when this run waited for a free worker: every
    #: worker its key may have was busy. None when it got one (or room for a new one) at once.
    queue_wait: tuple[int, int] | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"


def _failed(
    error: str,
    error_type: str,
    *,
    traceback: str | None = None,
    logs: str = "",
    duration_ms: float = 0.0,
    worker_pid: int | None = None,
) -> RunResult:
    return RunResult(
        status="failed",
        error=error,
        error_type=error_type,
        traceback=traceback,
        logs=logs,
        duration_ms=duration_ms,
        worker_pid=worker_pid,
    )


def _seconds(value: float) -> str:
    """``2`` -> ``"2.0"``, ``0.25`` -> ``"0.25"``."""
    return f"{value:.1f}" if round(value, 1) == value else f"{value:g}"


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


@functools.lru_cache(maxsize=1024)
def _entrypoint_error(entrypoint: str) -> str | None:
    """Why *entrypoint* is malformed, or None (cached: checked on every run)."""
    try:
        parse_entrypoint(entrypoint)
    except InvalidAgent as exc:
        return exc.message
    return None


#: Variables of rf's own environment that workers get (besides ``LC_*`` and ``PYTHON*``):
#: what Python, locales, TLS and outgoing HTTP need. Everything else stays in rf: agent
#: code never sees ``RF_*`` (configuration, ``RF_SECRET_*`` credentials) nor anything an
#: agent's ``[env]`` table does not name (see :func:`worker_env`).
ENV_ALLOWED = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "TZ",
        "TMPDIR",
        "USER",
        "LOGNAME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        *(name for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY") for name in (proxy, proxy.lower())),
    }
)
ENV_ALLOWED_PREFIXES = ("LC_", "PYTHON")


def _allowed(name: str) -> bool:
    return not name.upper().startswith("RF_") and (name in ENV_ALLOWED or name.startswith(ENV_ALLOWED_PREFIXES))


def worker_env(extra_env: dict[str, str] | None = None, agent_env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a worker (or the deploy check) starts with: an allow-list of ours
    (:data:`ENV_ALLOWED`, ``LC_*``, ``PYTHON*``), the pool's *extra_env*, the agent's
    ``[env]`` values (*agent_env*, see ``AgentConfig.env_values``), and what the worker
    itself needs (``rf`` importable, no ``__pycache__`` in agent dirs). ``RF_*`` never."""
    env = {name: value for name, value in os.environ.items() if _allowed(name) and name != "PYTHONPATH"}
    for more in (extra_env, agent_env):
        if more:
            env.update((name, value) for name, value in more.items() if not name.upper().startswith("RF_"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    existing = os.environ.get("PYTHONPATH")
    env["PYTHONPATH"] = RF_ROOT + (os.pathsep + existing if existing else "")
    return env


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Delete a directory tree even where rf (commit directories are read-only) or agent
    code made parts of it read-only: each directory is made writable first."""
    import shutil
    import stat

    top = os.fspath(path)
    if not os.path.isdir(top) or os.path.islink(top):
        return
    try:
        os.chmod(top, stat.S_IRWXU)
    except OSError:
        pass
    for dirpath, dirnames, _ in os.walk(top):
        for name in dirnames:
            child = os.path.join(dirpath, name)
            if not os.path.islink(child):  # never chmod what a link points to
                try:
                    os.chmod(child, stat.S_IRWXU)
                except OSError:
                    pass
    shutil.rmtree(top, ignore_errors=True)


@dataclass
class WorkerSetup:
    """What the pool's ``prepare`` hook says about a worker about to start (a cold start,
    never a warm run): the agent's ``[env]`` values, and, if its code directory did not
    match its commit and was re-created first, what differed."""

    env: dict[str, str]
    problem: str | None = None


#: ``prepare(key, code_dir)``, called before each new worker starts (outside the pool's lock).
PrepareHook = Callable[[WorkerKey, str], WorkerSetup]


def _run_frame(request: RunRequest) -> bytes:
    """The ``run`` message for a worker (raises TypeError/ValueError for non-JSON input)."""
    return frame(
        dumpb(
            {
                "t": "run",
                "id": request.execution_id,
                "env": request.env,
                "agent": request.agent,
                "session_id": request.session_id,
                "stream": request.stream,
                "trace_root": request.trace_root,
                "input": request.input,
            }
        )
    )


class WorkerProcess:
    """One worker subprocess, seen from the host.

    Owned by one thread at a time (the pool hands it out); only
    :meth:`signal_kill` may be called from another thread.
    """

    def __init__(
        self,
        key: WorkerKey,
        code_dir: str,
        entrypoint: str,
        *,
        python: str | None = None,
        env: dict[str, str] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.key = key
        self.code_dir = code_dir
        self.real_dir = os.path.realpath(code_dir)
        self.entrypoint = entrypoint
        #: The event loop whose selector watches this worker's answers (WorkerPool.arun), or
        #: None; and the future an async run waits on for the next bytes.
        self.watched_by: Any = None
        self.wake: Any = None
        if not os.path.isdir(self.real_dir):
            raise InvalidAgent(
                f"agent code directory {code_dir} does not exist",
                "deploy the agent again",
            )
        # The worker's working directory: fresh, empty, its own, and outside the workspace
        # (never the commit directory, so a relative path reaches neither the workspace's
        # .rf/ nor the agent's files; agents find those with Path(__file__).parent).
        self.run_dir: str | None = tempfile.mkdtemp(prefix="rf-run-")
        # The capture file is the worker's fd 1 and 2; opened in append mode
        # so the worker can truncate it between runs while we share it.
        capture: IO[bytes] | None = None
        try:
            capture = tempfile.TemporaryFile(prefix="rf-worker-")  # noqa: SIM115 - closed by destroy()
            fd = capture.fileno()
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)
            self.proc = subprocess.Popen(
                [
                    python or sys.executable,
                    # -P: the working directory is not put on sys.path (``-m`` would put it
                    # first); the agent's directory is, by the worker, and rf is on PYTHONPATH.
                    "-P",
                    "-m",
                    "rf.runtime.worker",
                    self.real_dir,
                    entrypoint,
                    str(max_message_bytes),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=capture,
                cwd=self.run_dir,
                env=env if env is not None else worker_env(),
                start_new_session=True,  # own process group: we can kill its children too
                bufsize=0,
            )
        except BaseException:
            if capture is not None:
                capture.close()
            remove_tree(self.run_dir)
            raise
        self._capture: IO[bytes] | None = capture
        self.pid = self.proc.pid
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.reader = FrameReader(self.proc.stdout.fileno(), max_message_bytes + ENVELOPE_SLACK_BYTES)
        self._write_fd = self.proc.stdin.fileno()
        os.set_blocking(self._write_fd, False)
        self.ready = False
        self.busy = False
        self.dead = False
        self.retiring = False
        #: ``(started, deadline)`` when the next run's request was written to the pipe as this
        #: worker was handed over (WorkerPool._hand_over); the run then only reads its answer.
        self.presend: tuple[float, float] | None = None
        self.stop_reason: str | None = None
        #: ``(start_ns, end_ns, what differed)`` when the pool's ``prepare`` hook found the
        #: code directory not matching its commit and re-created it before this worker started.
        self.code_repair: tuple[int, int, str] | None = None
        self.last_used = time.monotonic()
        self.runs = 0

    def __repr__(self) -> str:
        return f"<WorkerProcess pid={self.pid} key={self.key} ready={self.ready} busy={self.busy}>"

    @property
    def write_fd(self) -> int:
        """The non-blocking end of the worker's stdin (requests and host-call replies)."""
        return self._write_fd

    def send(self, data: bytes, deadline: float | None) -> None:
        write_all(self._write_fd, data, deadline)

    def recv(self, deadline: float | None) -> Any:
        return self.reader.read(deadline)

    # -- ending ---------------------------------------------------------------

    def signal_kill(self) -> None:
        """SIGKILL the worker and anything it started (safe from any thread)."""
        if self.proc.returncode is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                self.proc.kill()
            except OSError:
                pass

    def reap(self, timeout: float = _REAP_WAIT_S) -> int | None:
        """Wait for the process to end (killing it if it lingers); its return code."""
        self.dead = True
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal_kill()
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None
        finally:
            # Children the agent left behind share the process group.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass

    def kill(self, *, dump: bool = False) -> None:
        """Kill and reap. With *dump*, first ask ``faulthandler`` for a stack
        dump (SIGUSR1) so the caller can say where the worker was stuck."""
        self.dead = True
        if dump and self.proc.returncode is None and self._capture is not None:
            fd = self._capture.fileno()
            before = last = os.fstat(fd).st_size
            try:
                os.kill(self.pid, signal.SIGUSR1)
            except OSError:
                pass
            else:
                stop = time.monotonic() + _DUMP_WAIT_S
                while time.monotonic() < stop:
                    time.sleep(0.005)
                    size = os.fstat(fd).st_size
                    if size != before and size == last:
                        break
                    last = size
        self.signal_kill()
        self.reap()

    def destroy(self) -> None:
        """Kill, reap and close every file; idempotent."""
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        if self._capture is not None:
            self._capture.close()
            self._capture = None
        if self.run_dir is not None:
            remove_tree(self.run_dir)
            self.run_dir = None

    def read_capture(self) -> tuple[str, str | None]:
        """``(logs, dump)`` from the capture file: what the worker printed
        during this execution, and the ``faulthandler`` dump if there is one."""
        if self._capture is None:
            return "", None
        fd = self._capture.fileno()
        size = os.fstat(fd).st_size
        head = os.pread(fd, min(size, LOG_LIMIT_BYTES), 0)
        if size <= LOG_LIMIT_BYTES:
            text = head.decode("utf-8", "replace")
            match = _DUMP_START.search(text)
            if match is None:
                return text, None
            return text[: match.start()], text[match.start() :]
        tail = os.pread(fd, 32768, size - 32768).decode("utf-8", "replace")
        match = _DUMP_START.search(tail)
        return truncated_logs(head, size - LOG_LIMIT_BYTES), (tail[match.start() :] if match else None)

    def relative_dump(self, dump: str | None) -> str | None:
        """The dump with agent files shown relative to the agent directory."""
        if not dump:
            return dump
        return dump.replace(f'File "{self.real_dir.rstrip(os.sep)}{os.sep}', 'File "')

    def location_in(self, dump: str | None) -> str | None:
        """The innermost agent frame (``agent.py:3``) in a ``faulthandler`` dump."""
        if not dump:
            return None
        prefix = self.real_dir.rstrip(os.sep) + os.sep
        for match in _DUMP_FRAME.finditer(dump):
            if match.group(1).startswith(prefix):
                return f"{relative_path(match.group(1), self.real_dir)}:{match.group(2)}"
        return None


class _PoolClosed(Exception):
    pass


_POOLS: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


@atexit.register
def _close_all_pools() -> None:
    """No orphaned workers at interpreter exit (they would also notice our
    death by themselves, but only within a second)."""
    for pool in list(_POOLS):
        pool.close()


def _kill_workers(by_key: dict[WorkerKey, list[WorkerProcess]]) -> None:
    for workers in list(by_key.values()):
        for worker in list(workers):
            worker.signal_kill()
            if worker.run_dir is not None:
                remove_tree(worker.run_dir)


def _reaper(pool_ref: weakref.ref[WorkerPool], stop: threading.Event, interval: float) -> None:
    while not stop.wait(interval):
        pool = pool_ref()
        if pool is None:
            return
        pool._sweep()
        del pool


class _LoopDeadlines:
    """The deadlines of the async runs waiting on one event loop, checked by one timer
    every :data:`DEADLINE_TICK_S` while any is pending — instead of a timer per wait
    (a heap entry made and cancelled on every request). A run times out at most one
    tick after its deadline."""

    _by_loop: ClassVar[weakref.WeakKeyDictionary[Any, _LoopDeadlines]] = weakref.WeakKeyDictionary()

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._pending: dict[Any, float] = {}
        self._ticking = False

    @classmethod
    def of(cls, loop: Any) -> _LoopDeadlines:
        found = cls._by_loop.get(loop)
        if found is None:
            found = cls._by_loop[loop] = cls(loop)
        return found

    def add(self, future: Any, deadline: float) -> None:
        self._pending[future] = deadline
        if not self._ticking:
            self._ticking = True
            self._loop.call_later(min(DEADLINE_TICK_S, max(0.0, deadline - time.monotonic())), self._tick)

    def discard(self, future: Any) -> None:
        self._pending.pop(future, None)

    def _tick(self) -> None:
        if not self._pending:
            self._ticking = False
            return
        now = time.monotonic()
        for future, deadline in list(self._pending.items()):
            if deadline <= now:
                del self._pending[future]
                if not future.done():
                    future.set_exception(TimeoutError())
        soonest = min(self._pending.values(), default=now + DEADLINE_TICK_S)
        self._loop.call_later(min(DEADLINE_TICK_S, max(0.0, soonest - now)), self._tick)


#: How often an event loop checks its async runs' deadlines (see _LoopDeadlines).
DEADLINE_TICK_S = 0.1


class _WaitTimedOut(Exception):
    """No worker of the key became free within the run's timeout."""


def _no_worker_in_time(key: WorkerKey, timeout_s: float) -> RunResult:
    """A run that never started: every worker of its agent stayed busy for its whole timeout
    (e.g. agents calling agents until the environment's workers are all waiting callers)."""
    return _failed(f"no worker of agent {key[1]} was free within {timeout_s:g} s (timeout_s): every one stayed busy",
                   "timeout")


class _Exchange:
    """One run's messages from its worker, read the same way by :meth:`WorkerPool._execute`
    (a thread, blocking reads) and :meth:`WorkerPool._aexecute` (the event loop): what each
    message means is decided here once; the two only differ in how they wait and where
    host calls run."""

    __slots__ = ("chunk_bytes", "chunks", "max_bytes", "on_chunk", "started", "worker")

    def __init__(self, worker: WorkerProcess, started: float, max_bytes: int,
                 on_chunk: Callable[[Any], None] | None) -> None:
        self.worker = worker
        self.started = started
        self.max_bytes = max_bytes
        self.on_chunk = on_chunk
        self.chunks: list[Any] = []
        self.chunk_bytes = 0

    def step(self, message: dict[str, Any] | None) -> RunResult | str | None:
        """What to do with one message: None (read the next one), a final RunResult (a
        failure), or ``"done"`` / ``"call"`` / ``"stream"`` (a host call whose reply streams)
        / ``"ended"`` (the worker closed its pipe) for the caller to act on."""
        if message is None:
            return "ended"
        kind = message.get("t")
        if kind == "done":
            return "done"
        if kind == "chunk":
            self.chunk_bytes += self.worker.reader.last_frame_bytes
            if self.chunk_bytes > self.max_bytes + ENVELOPE_SLACK_BYTES:
                return self.fail(f"output is too large (more than {describe_size(self.max_bytes)} of chunks)",
                                 "output")
            data = message.get("data")
            self.chunks.append(data)
            if self.on_chunk is not None:
                try:
                    self.on_chunk(data)
                except Exception as exc:  # noqa: BLE001 - the consumer's problem, not ours
                    return self.fail(f"stream consumer failed: {type(exc).__name__}: {exc}", "protocol")
            return None
        if kind == "call":
            return "stream" if streams(message.get("method"), message.get("params")) else "call"
        return self.fail(f"worker sent an unexpected {kind!r} message", "protocol")

    def broken(self, exc: ProtocolError) -> RunResult:
        """The run's result when the worker's messages break the protocol (or are too large)."""
        if isinstance(exc, FrameTooLarge):
            return self.fail(f"output is too large ({describe_size(exc.size)}; "
                             f"the limit is {describe_size(self.max_bytes)})", "output")
        return self.fail(f"worker sent a malformed message: {exc}", "protocol")

    def fail(self, error: str, error_type: str) -> RunResult:
        """Kill the worker (it cannot serve another run) and fail this one."""
        self.worker.kill()
        return _failed(error, error_type, duration_ms=_ms_since(self.started), worker_pid=self.worker.pid)


@dataclasses.dataclass(frozen=True)
class PoolLimits:
    """The worker budget of one environment (``[runtime.staging]`` / ``[runtime.production]``
    in rf.toml). Each environment has its own: staging work never takes, or evicts, a
    production worker."""

    #: workers of one agent (one commit) at a time
    max_workers_per_agent: int = 2
    #: workers of the environment in all (idle ones of another agent are evicted to make room)
    max_workers: int = 16
    #: requests waiting for a busy agent's worker; one more is refused (429, Retry-After)
    max_waiting: int = 256


#: requests up to this size are written to a worker as it is handed over to them; a pipe
#: write of at most PIPE_BUF bytes is atomic (all or nothing), so it never needs a retry
_PRESEND_MAX = min(select.PIPE_BUF, 4096)


def _presend(worker: WorkerProcess, payload: bytes, timeout_s: float) -> tuple[float, float] | None:
    """Write a waiting run's request to a worker just handed over to it, so the worker starts
    at once instead of idling until that run's task is scheduled: ``(started, deadline)``, or
    None when the pipe does not take it now (the run then sends it as usual)."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout_s
    try:
        written = os.write(worker.write_fd, payload)
    except OSError:  # full (BlockingIOError) or gone: the run's own send sees it
        return None
    if written != len(payload):  # cannot happen for <= PIPE_BUF bytes; never leave half a frame
        worker.dead = True
        return started, deadline
    return started, deadline


def _executor(name: str, size: int) -> Any:
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)


@functools.cache
def host_call_executor() -> Any:
    """The threads that serve agents' host calls (connectors, LLM, KB...) for runs driven
    from an event loop. Their own, so that long blocking work elsewhere (streams, webhooks,
    cold starts on the loop's default executor) can never starve a running execution's
    host calls."""
    return _executor("rf-host-call", 64)


@functools.cache
def blocking_run_executor() -> Any:
    """The threads that run whole executions off the event loop (a cold start, a stream, a
    webhook, a management call that runs an agent): apart from the loop's default executor
    (quick lookups, the request guard's peer check) and from host calls."""
    return _executor("rf-run", 128)


async def in_executor(executor: Any, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
    """``asyncio.to_thread`` on a given executor (the context variables go along)."""
    import asyncio
    import contextvars

    loop = asyncio.get_running_loop()
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await loop.run_in_executor(executor, call)


class WorkerPool:
    """Warm worker subprocesses, per ``(env, agent, commit)`` key."""

    def __init__(
        self,
        *,
        python: str | None = None,
        max_workers_per_key: int = 2,
        max_total_workers: int = 16,
        max_waiting: int = 256,
        limits: dict[str, PoolLimits] | None = None,
        idle_ttl_s: float = 300.0,
        extra_env: dict[str, str] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        prepare: PrepareHook | None = None,
    ) -> None:
        """``limits`` per environment (the key's first part); an environment not in it
        gets ``max_workers_per_key``, ``max_total_workers`` and ``max_waiting``."""
        self.default_limits = PoolLimits(max_workers_per_key, max_total_workers, max_waiting)
        self.limits = dict(limits or {})
        for each in (self.default_limits, *self.limits.values()):
            if each.max_workers_per_agent < 1 or each.max_workers < 1 or each.max_waiting < 0:
                raise ValueError("worker limits must be at least 1 (max_waiting at least 0)")
        self.python = python or sys.executable
        self.idle_ttl_s = idle_ttl_s
        self.extra_env = dict(extra_env or {})
        self.max_message_bytes = max_message_bytes
        #: Called before every new worker starts (never on a warm run): the services verify
        #: (and repair) the commit's directory there and give the agent's ``[env]`` values.
        self.prepare = prepare
        self._cond = threading.Condition(threading.Lock())
        self._by_key: dict[WorkerKey, list[WorkerProcess]] = {}
        self._idle: OrderedDict[WorkerProcess, None] = OrderedDict()  # oldest first
        self._starting: dict[WorkerKey, int] = {}
        self._totals: dict[str, int] = {}  # per environment: live + starting
        self._waiting: dict[str, int] = {}  # per environment: requests waiting for a worker
        self._closed = False
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        #: per key, (event loop, future) of arun() calls waiting for a worker, oldest first
        self._async_waiters: dict[WorkerKey, collections.deque[tuple[Any, Any]]] = {}
        _POOLS.add(self)
        # A pool dropped without close() still takes its workers down.
        weakref.finalize(self, _kill_workers, self._by_key)

    # -- public API -----------------------------------------------------------

    def run(
        self,
        key: WorkerKey,
        code_dir: Path,
        entrypoint: str,
        request: RunRequest,
        *,
        timeout_s: float = 60.0,
        on_chunk: Callable[[Any], None] | None = None,
        host: HostHandler | None = None,
        on_start: Callable[[float], None] | None = None,
    ) -> RunResult:
        """Run one execution in a worker of *key*; never raises for agent failures.

        *timeout_s* covers the execution (and, separately, importing the
        agent in a new worker), not the wait for a free worker. *on_start*
        is called with the execution's deadline (``time.monotonic()``) when
        the worker starts it, so host calls can keep within it.
        """
        entrypoint_error = _entrypoint_error(entrypoint)
        if entrypoint_error is not None:
            return _failed(entrypoint_error, "exception")
        try:
            payload = _run_frame(request)
        except (TypeError, ValueError) as exc:
            return _failed(f"input is not JSON-serializable: {exc}", "protocol")
        waited_from = time.time_ns()
        queue_wait: list[int] = []
        try:
            worker = self._acquire(key, os.fspath(code_dir), entrypoint, queue_wait, wait_s=timeout_s)
        except _PoolClosed:
            return _failed("the worker pool is closed", "crash")
        except _WaitTimedOut:
            failed = _no_worker_in_time(key, timeout_s)
            failed.queue_wait = (queue_wait[0], queue_wait[1]) if queue_wait else None
            return failed
        except TooBusy:  # refused before it ran: not an execution, the caller answers 429
            raise
        except RfError as exc:  # the code directory or the agent's [env] (see prepare)
            return _failed(exc.message, "exception")
        except OSError as exc:
            return _failed(f"cannot start a worker: {exc}", "crash")
        waited = (queue_wait[0], queue_wait[1]) if queue_wait else None
        if waited is not None:
            waited_from = waited[1]  # a new worker's start follows the wait for room for it
        completed = False
        try:
            cold_start = None
            if not worker.ready:
                failure = self._await_ready(worker, timeout_s)
                cold_start = (waited_from, time.time_ns(), failure is None)
                if failure is not None:
                    failure.worker_start = cold_start
                    failure.code_repair = worker.code_repair
                    failure.queue_wait = waited
                    return failure
            result = self._execute(worker, payload, timeout_s, on_chunk, host, on_start)
            result.worker_start = cold_start
            result.queue_wait = waited
            if cold_start is not None:
                result.code_repair = worker.code_repair
            completed = True
            return result
        finally:
            self._release(worker, reusable=completed and not worker.dead)

    async def arun(
        self,
        key: WorkerKey,
        code_dir: Path,
        entrypoint: str,
        request: RunRequest,
        *,
        timeout_s: float = 60.0,
        on_chunk: Callable[[Any], None] | None = None,
        host: HostHandler | None = None,
        on_start: Callable[[float], None] | None = None,
    ) -> RunResult:
        """:meth:`run` for an asyncio caller (the server), without a thread per request.

        The common case — a warm, idle worker — is driven from the event loop:
        the request frame is written to the pipe and the answer awaited with
        ``loop.add_reader``; host calls (which may block on the network) go to a
        thread only when the agent makes one. Anything else (no idle worker, a
        worker still importing, a failure that needs killing and reaping)
        falls back to :meth:`run` on a thread, so behaviour is the same.
        """
        import asyncio

        def in_thread() -> Any:
            return in_executor(
                blocking_run_executor(),
                self.run,
                key,
                code_dir,
                entrypoint,
                request,
                timeout_s=timeout_s,
                on_chunk=on_chunk,
                host=host,
                on_start=on_start,
            )

        if _entrypoint_error(entrypoint) is not None:
            return await in_thread()
        try:
            payload = _run_frame(request)
        except (TypeError, ValueError):
            return await in_thread()
        loop = asyncio.get_running_loop()
        waited_from = 0  # when this request began waiting for a free worker (0: it did not wait)
        wait_until = 0.0  # a wait for a worker ends with the run's timeout
        try:
            while True:
                victims: list[WorkerProcess] = []
                waiter: asyncio.Future[WorkerProcess | None] | None = None
                refused: TooBusy | None = None
                with self._cond:
                    worker = None if self._closed else self._take_idle(key, os.fspath(code_dir), entrypoint, victims)
                    # Room for a new worker: under the limits, or an idle worker (of another key
                    # of this environment) that run() will evict, as it would for a thread.
                    if worker is None and not self._closed and not self._room(key, None):
                        # Every worker of this key is busy: wait on the loop, not on a thread.
                        try:
                            if not waited_from:
                                self._start_waiting(key)
                                waited_from = time.time_ns()
                        except TooBusy as exc:
                            refused = exc
                        else:
                            waiter = loop.create_future()
                            waiter.rf_key = key  # type: ignore[attr-defined]
                            waiter.rf_code = (os.fspath(code_dir), entrypoint)  # type: ignore[attr-defined]
                            # a small request is written to the worker as it is handed over
                            waiter.rf_payload = payload if len(payload) <= _PRESEND_MAX else None  # type: ignore[attr-defined]
                            waiter.rf_timeout = timeout_s  # type: ignore[attr-defined]
                            self._async_waiters.setdefault(key, collections.deque()).append((loop, waiter))
                if victims:
                    await in_executor(blocking_run_executor(), self._kill_all, victims)
                if refused is not None:
                    raise refused
                if waiter is None:
                    break
                if not wait_until:
                    wait_until = time.monotonic() + timeout_s
                # (the loop's deadline timer fails the waiter: a hand-over and a timeout exclude each other)
                deadlines = _LoopDeadlines.of(loop)
                deadlines.add(waiter, wait_until)
                try:
                    handed = await waiter
                except TimeoutError:  # every worker stayed busy for the run's whole timeout
                    failed = _no_worker_in_time(key, timeout_s)
                    failed.queue_wait = (waited_from, time.time_ns())
                    return failed
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled() and waiter.exception() is None:  # woken, then cancelled
                        handed = waiter.result()
                        if handed is not None and handed.presend is not None:
                            # it already runs this request: its answer would reach the next one
                            handed.presend = None
                            self._unwatch(handed)
                            blocking_run_executor().submit(self._release, handed, reusable=False)
                        elif handed is not None:
                            self._release(handed, reusable=True)
                        else:
                            with self._cond:
                                self._wake_async_waiters(key)
                    raise
                finally:
                    deadlines.discard(waiter)
                if handed is not None:  # a released worker handed over directly (see _release)
                    worker = handed
                    break
        finally:
            if waited_from:
                with self._cond:
                    self._stop_waiting(key)
        waited = (waited_from, time.time_ns()) if waited_from else None
        if worker is None or not worker.ready or (worker.presend is not None and worker.dead):
            if worker is not None:
                self._release(worker, reusable=worker.presend is None)
            result = await in_thread()
            if waited is not None:  # the wait on the loop, then any in run()
                result.queue_wait = (waited[0], result.queue_wait[1] if result.queue_wait else waited[1])
            return result
        reusable = False
        try:
            result = await self._aexecute(worker, payload, timeout_s, on_chunk, host, on_start)
            result.queue_wait = waited
            reusable = not worker.dead
            return result
        finally:
            if reusable:
                self._release(worker, reusable=True)
            else:
                self._unwatch(worker)  # on this loop's thread, before its pipe is closed
                await in_executor(blocking_run_executor(), self._release, worker, reusable=False)

    async def _aexecute(
        self,
        worker: WorkerProcess,
        payload: bytes,
        timeout_s: float,
        on_chunk: Callable[[Any], None] | None,
        host: HostHandler | None,
        on_start: Callable[[float], None] | None = None,
    ) -> RunResult:
        import asyncio

        loop = asyncio.get_running_loop()
        presend = worker.presend
        if presend is not None:  # written as the worker was handed over (see _hand_over)
            worker.presend = None
            started, deadline = presend
        else:
            started = time.perf_counter()
            deadline = time.monotonic() + timeout_s
        if on_start is not None:
            on_start(deadline)
        worker.runs += 1
        streaming: asyncio.Future[None] | None = None  # a streaming host call being served

        deadlines = _LoopDeadlines.of(loop)

        async def readable() -> None:
            future: asyncio.Future[None] = loop.create_future()
            if worker.watched_by is not loop:
                self._watch(worker, loop)
            worker.wake = future
            deadlines.add(future, deadline)
            try:
                await future
            finally:
                deadlines.discard(future)
                worker.wake = None

        exchange = _Exchange(worker, started, self.max_message_bytes, on_chunk)
        try:
            if presend is None:
                worker.send(payload, deadline)
            # a request just written cannot have its answer yet: wait before trying to read
            wait = presend is None
            while True:
                if wait:
                    await readable()
                message = worker.reader.read_nowait()
                if message is NEED_MORE:
                    wait = True
                    continue
                wait = False  # another frame may already be buffered
                step = exchange.step(message)
                if step is None:
                    continue
                if isinstance(step, RunResult):
                    return step
                if step == "done":
                    if streaming is not None:
                        await streaming  # (the worker read its reply first: this has ended)
                    return self._done(worker, message, exchange.chunks, started)
                if step == "stream":
                    # Served in a thread that sends each piece, then the reply, to the
                    # worker; meanwhile this loop reads what the worker sends (its chunks).
                    streaming = asyncio.ensure_future(
                        in_executor(host_call_executor(), self._serve_streaming, host, message, worker, deadline)
                    )
                elif step == "call":
                    reply = await in_executor(host_call_executor(), self._serve_host, host, message)
                    worker.send(frame(reply), deadline)
                else:  # "ended": the worker is gone
                    return await in_executor(blocking_run_executor(), self._ended, worker, started)
                wait = True
        except (TimeoutError, OSError) as exc:
            if isinstance(exc, TimeoutError):
                return await in_executor(blocking_run_executor(), self._timed_out, worker, timeout_s, started)
            return await in_executor(blocking_run_executor(), self._ended, worker, started)  # a broken pipe
        except ProtocolError as exc:
            return exchange.broken(exc)

    def warm(self, key: WorkerKey, code_dir: Path, entrypoint: str) -> None:
        """Start one worker for *key* ahead of time (after a deploy or promote),
        unless it already has one. Does not wait for the agent to import."""
        victims: list[WorkerProcess] = []
        with self._cond:
            if self._closed or self._count(key) > 0:
                return
            if not self._room(key, victims):
                return
            self._reserve(key)
        self._kill_all(victims)
        try:
            worker = self._spawn(key, os.fspath(code_dir), entrypoint)
        except (OSError, RfError) as exc:
            _log.warning("cannot warm a worker for %s: %s", key, exc)
            with self._cond:
                self._unreserve(key)
            return
        with self._cond:
            self._starting[key] -= 1
            if self._closed:
                self._totals[key[0]] -= 1
                victims.append(worker)
            else:
                self._by_key.setdefault(key, []).append(worker)
                self._idle[worker] = None
            self._cond.notify_all()
        self._kill_all(victims)

    def retire(self, predicate: Callable[[WorkerKey], bool]) -> None:
        """Stop idle workers whose key matches; busy ones stop after their run."""
        victims: list[WorkerProcess] = []
        with self._cond:
            for key, workers in list(self._by_key.items()):
                if not predicate(key):
                    continue
                for worker in list(workers):
                    if worker.busy:
                        worker.retiring = True
                    else:
                        self._remove(worker)
                        victims.append(worker)
            self._cond.notify_all()
        self._kill_all(victims)

    def close(self) -> None:
        """Kill every worker. Idempotent; runs at interpreter exit too.

        Busy workers get SIGKILL; the thread running them sees the worker
        die, returns a failed result and cleans up.
        """
        victims: list[WorkerProcess] = []
        with self._cond:
            self._closed = True
            self._wake_async_waiters()  # they see the pool closed and fall back to run()
            for workers in list(self._by_key.values()):
                for worker in list(workers):
                    if worker.busy:
                        worker.stop_reason = "the worker pool was closed"
                        worker.signal_kill()
                    else:
                        self._remove(worker)
                        victims.append(worker)
            self._cond.notify_all()
        self._stop.set()
        self._kill_all(victims)

    def stats(self) -> dict[str, Any]:
        """Counts and pids, e.g. ``{"workers": 3, "busy": 1, "idle": 2,
        "starting": 0, "keys": {"staging/hello/abc123": {...}}}``."""
        with self._cond:
            keys: dict[str, Any] = {}
            busy = 0
            for key, workers in self._by_key.items():
                key_busy = sum(1 for w in workers if w.busy)
                busy += key_busy
                keys["/".join(key)] = {
                    "workers": len(workers),
                    "busy": key_busy,
                    "pids": [w.pid for w in workers],
                    "runs": sum(w.runs for w in workers),
                }
            live = sum(len(w) for w in self._by_key.values())
            return {
                "workers": live,
                "busy": busy,
                "idle": live - busy,
                "starting": sum(self._starting.values()),
                "closed": self._closed,
                "keys": keys,
            }

    # -- bookkeeping (call with self._cond held unless noted) ---------------------

    def limits_of(self, env: str) -> PoolLimits:
        """The worker budget of one environment."""
        return self.limits.get(env, self.default_limits)

    def _count(self, key: WorkerKey) -> int:
        return len(self._by_key.get(key, ())) + self._starting.get(key, 0)

    def _room(self, key: WorkerKey, victims: list[WorkerProcess] | None) -> bool:
        """May a new worker of *key* start? Under the agent's and the environment's limits,
        or (with *victims*) by evicting the environment's least recently used idle worker;
        without *victims*, whether such an idle worker exists."""
        env = key[0]
        limits = self.limits_of(env)
        if self._count(key) >= limits.max_workers_per_agent:
            return False
        if self._totals.get(env, 0) < limits.max_workers:
            return True
        if victims is None:
            return any(w.key[0] == env for w in self._idle)
        return self._evict_oldest(victims, env)

    def _start_waiting(self, key: WorkerKey) -> None:
        """Count one more request waiting in *key*'s environment, or refuse it (TooBusy)."""
        env = key[0]
        limit = self.limits_of(env).max_waiting
        if self._waiting.get(env, 0) >= limit:
            raise TooBusy(
                f"{env} is busy: {limit} requests already wait for a worker of its agents",
                f"retry in a moment (Retry-After), or raise [runtime.{env}] max_waiting / max_workers_per_agent "
                "in rf.toml",
            )
        self._waiting[env] = self._waiting.get(env, 0) + 1

    def _stop_waiting(self, key: WorkerKey) -> None:
        self._waiting[key[0]] -= 1

    def _reserve(self, key: WorkerKey) -> None:
        self._starting[key] = self._starting.get(key, 0) + 1
        self._totals[key[0]] = self._totals.get(key[0], 0) + 1

    def _unreserve(self, key: WorkerKey) -> None:
        self._starting[key] -= 1
        self._totals[key[0]] -= 1
        self._cond.notify_all()

    def _remove(self, worker: WorkerProcess) -> None:
        workers = self._by_key.get(worker.key)
        if workers is not None and worker in workers:
            workers.remove(worker)
            if not workers:
                del self._by_key[worker.key]
            self._totals[worker.key[0]] -= 1
        self._idle.pop(worker, None)

    def _evict_oldest(self, victims: list[WorkerProcess], env: str) -> bool:
        """Make room in *env* by stopping its least recently used idle worker (never one
        of the other environment)."""
        worker = next((w for w in self._idle if w.key[0] == env), None)
        if worker is None:
            return False
        self._remove(worker)
        victims.append(worker)
        return True

    def _expire(self, victims: list[WorkerProcess]) -> None:
        cutoff = time.monotonic() - self.idle_ttl_s
        while self._idle:
            worker = next(iter(self._idle))
            if worker.last_used > cutoff:
                break
            self._remove(worker)
            victims.append(worker)

    def _wake_async_waiters(self, key: WorkerKey | None = None) -> None:
        """Wake :meth:`arun` calls waiting for a free worker (call with the lock held): one
        waiting for ``key`` (or, if none waits for it, for another key: a worker may have
        freed room), or every one when ``key`` is None. Waking one per released worker,
        not all, spares the others a pointless wake-up and retry."""
        if key is None:
            queues, self._async_waiters = list(self._async_waiters.values()), {}
            for waiting in queues:
                for loop, future in waiting:
                    self._resolve_waiter(loop, future)
            return
        for candidate in (key, *self._async_waiters):
            queue = self._async_waiters.get(candidate)
            while queue:
                loop, future = queue.popleft()
                if not future.done() and self._resolve_waiter(loop, future):
                    if not queue:
                        del self._async_waiters[candidate]
                    return
            self._async_waiters.pop(candidate, None)

    @staticmethod
    def _watch(worker: WorkerProcess, loop: Any) -> None:
        """Have *loop* wake the run waiting on *worker* when its answer arrives. The
        registration stays while the worker goes from one async run to the next (see
        :meth:`_hand_over`): two fewer selector calls per request under load."""

        def readable() -> None:
            future = worker.wake
            if future is not None:
                if not future.done():
                    future.set_result(None)
            elif worker.presend is not None:  # its run is about to read (it was handed over)
                return
            elif worker.watched_by is loop:  # nobody waits (e.g. it died between runs): stop watching
                WorkerPool._unwatch(worker)

        loop.add_reader(worker.reader.fd, readable)
        worker.watched_by = loop

    @staticmethod
    def _unwatch(worker: WorkerProcess) -> None:
        """Stop watching *worker* (before it goes idle or is destroyed). Called on the
        watching loop's thread; from elsewhere the loop is asked to do it."""
        loop = worker.watched_by
        if loop is None:
            return
        worker.watched_by = None
        asyncio = sys.modules["asyncio"]
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        fd = worker.reader.fd
        if running is loop:
            loop.remove_reader(fd)
        elif not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.remove_reader, fd)

    def _hand_over(self, worker: WorkerProcess) -> bool:
        """Give a worker that just finished straight to the first :meth:`arun` waiting for its
        key on the running loop (call with the lock held): that request skips a wake-up and
        the idle list. Only a worker of the same code, still alive, is handed over."""
        queue = self._async_waiters.get(worker.key)
        if not queue:
            return False
        loop, future = queue[0]
        asyncio = sys.modules.get("asyncio")  # not imported: no loop can be waiting
        try:
            running = asyncio.get_running_loop() if asyncio is not None else None
        except RuntimeError:
            return False
        if loop is not running or getattr(future, "rf_code", None) != (worker.code_dir, worker.entrypoint):
            return False
        if future.done():  # cancelled: drop it and let the usual path look further
            return False
        if worker.proc.returncode is not None:
            return False
        queue.popleft()
        if not queue:
            del self._async_waiters[worker.key]
        worker.last_used = time.monotonic()
        payload = getattr(future, "rf_payload", None)
        if payload is not None:
            worker.presend = _presend(worker, payload, getattr(future, "rf_timeout", 60.0))
        future.set_result(worker)
        return True

    def _resolve_waiter(self, loop: Any, future: Any) -> bool:
        """Wake one waiting :meth:`arun` (directly when called on its loop's thread)."""
        import asyncio

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            if future.done():
                return False
            future.set_result(None)
            return True

        def wake() -> None:
            if not future.done():
                future.set_result(None)
            else:  # cancelled meanwhile: pass the wake-up on
                with self._cond:
                    self._wake_async_waiters(future.rf_key)

        try:
            loop.call_soon_threadsafe(wake)
        except RuntimeError:  # that loop is closed
            return False
        return True

    def _take_idle(
        self, key: WorkerKey, code_dir: str, entrypoint: str, victims: list[WorkerProcess]
    ) -> WorkerProcess | None:
        """The most recently used idle worker of *key* (warmest caches)."""
        for worker in list(reversed(self._by_key.get(key, []))):
            if worker.busy:
                continue
            if worker.code_dir != code_dir or worker.entrypoint != entrypoint or worker.proc.poll() is not None:
                # Same key but different code (a re-used label), or it died
                # while idle: never hand it out.
                self._remove(worker)
                victims.append(worker)
                continue
            del self._idle[worker]
            worker.busy = True
            return worker
        return None

    @staticmethod
    def _kill_all(victims: list[WorkerProcess]) -> None:
        """Destroy workers (outside the lock: reaping takes a moment)."""
        for worker in victims:
            worker.destroy()

    def _sweep(self) -> None:
        """Stop workers idle for longer than ``idle_ttl_s`` (reaper thread)."""
        victims: list[WorkerProcess] = []
        with self._cond:
            self._expire(victims)
        self._kill_all(victims)

    def _start_reaper(self) -> None:
        if self._reaper is None:
            interval = max(0.05, min(self.idle_ttl_s / 2, 30.0))
            self._reaper = threading.Thread(
                target=_reaper,
                args=(weakref.ref(self), self._stop, interval),
                name="rf-worker-reaper",
                daemon=True,
            )
            self._reaper.start()

    def _spawn(self, key: WorkerKey, code_dir: str, entrypoint: str) -> WorkerProcess:
        """Start a worker (without the lock; the caller reserved its slot), after the
        ``prepare`` hook checked its code directory and said what ``[env]`` adds."""
        setup = repair = None
        if self.prepare is not None:
            started = time.time_ns()
            setup = self.prepare(key, code_dir)
            repair = (started, time.time_ns(), setup.problem) if setup.problem else None
        worker = WorkerProcess(
            key,
            code_dir,
            entrypoint,
            python=self.python,
            env=worker_env(self.extra_env, setup.env if setup is not None else None),
            max_message_bytes=self.max_message_bytes,
        )
        worker.code_repair = repair
        with self._cond:
            self._start_reaper()
        return worker

    def _acquire(
        self, key: WorkerKey, code_dir: str, entrypoint: str, queue_wait: list[int] | None = None,
        wait_s: float | None = None,
    ) -> WorkerProcess:
        """A worker of *key*: an idle one, a new one, or, when there is no room for one, the
        next one freed — within *wait_s* (else :class:`_WaitTimedOut`). If it had to wait,
        ``(start_ns, end_ns)`` of the wait go into *queue_wait*."""
        victims: list[WorkerProcess] = []
        waited_from = 0
        wait_until = None if wait_s is None else time.monotonic() + wait_s
        try:
            with self._cond:
                while True:
                    if self._closed:
                        raise _PoolClosed
                    self._expire(victims)
                    worker = self._take_idle(key, code_dir, entrypoint, victims)
                    if worker is not None:
                        return worker
                    if self._room(key, victims):
                        self._reserve(key)
                        break
                    if not waited_from:
                        self._start_waiting(key)  # or TooBusy: too many already wait
                        waited_from = time.time_ns()
                    if wait_until is None:
                        self._cond.wait()
                    elif not self._cond.wait(max(0.0, wait_until - time.monotonic())) and \
                            time.monotonic() >= wait_until:
                        raise _WaitTimedOut
        finally:
            if waited_from:
                with self._cond:
                    self._stop_waiting(key)
                if queue_wait is not None:
                    queue_wait[:] = (waited_from, time.time_ns())
            self._kill_all(victims)
        try:
            worker = self._spawn(key, code_dir, entrypoint)
        except BaseException:
            with self._cond:
                self._unreserve(key)
            raise
        with self._cond:
            self._starting[key] -= 1
            worker.busy = True
            self._by_key.setdefault(key, []).append(worker)
        return worker

    def _release(self, worker: WorkerProcess, *, reusable: bool) -> None:
        keep = False
        with self._cond:
            if reusable and not worker.retiring and not self._closed and self._hand_over(worker):
                return  # still busy, still watched: now with the next request waiting on this loop
            if worker.watched_by is not None:
                self._unwatch(worker)  # idle workers are not watched (a reaper may close them)
            worker.busy = False
            if reusable and not worker.retiring and not self._closed:
                worker.last_used = time.monotonic()
                self._idle[worker] = None
                keep = True
            else:
                self._remove(worker)
            self._cond.notify_all()
            # A kept worker serves one waiter of its key; a removed one frees room for any.
            self._wake_async_waiters(worker.key if keep else None)
        if not keep:
            worker.destroy()

    # -- one execution -------------------------------------------------------------

    def _await_ready(self, worker: WorkerProcess, timeout_s: float) -> RunResult | None:
        """Wait for a new worker to import the agent; a failed result if it can't."""
        started = time.perf_counter()
        try:
            message = worker.recv(time.monotonic() + timeout_s)
        except TimeoutError:
            return self._timed_out(worker, timeout_s, started, " while importing the agent")
        except ProtocolError as exc:
            worker.kill()
            return _failed(f"worker sent a malformed message: {exc}", "protocol", worker_pid=worker.pid)
        if message is None:
            return self._ended(worker, started, " while importing the agent")
        kind = message.get("t")
        if kind == "ready":
            worker.ready = True
            return None
        worker.kill()
        if kind == "init_error":
            return _failed(
                str(message.get("message")),
                "exception",
                traceback=message.get("traceback"),
                logs=message.get("logs") or "",
                worker_pid=worker.pid,
            )
        return _failed(
            f"worker sent an unexpected {kind!r} message while starting",
            "protocol",
            worker_pid=worker.pid,
        )

    def _execute(
        self,
        worker: WorkerProcess,
        payload: bytes,
        timeout_s: float,
        on_chunk: Callable[[Any], None] | None,
        host: HostHandler | None,
        on_start: Callable[[float], None] | None = None,
    ) -> RunResult:
        started = time.perf_counter()
        deadline = time.monotonic() + timeout_s
        if on_start is not None:
            on_start(deadline)
        worker.runs += 1
        streaming: threading.Thread | None = None  # a streaming host call being served
        exchange = _Exchange(worker, started, self.max_message_bytes, on_chunk)
        try:
            worker.send(payload, deadline)
            while True:
                message = worker.recv(deadline)
                step = exchange.step(message)
                if step is None:
                    continue
                if isinstance(step, RunResult):
                    return step
                if step == "done":
                    if streaming is not None:
                        streaming.join(max(0.0, deadline - time.monotonic()))
                    return self._done(worker, message, exchange.chunks, started)
                if step == "stream":
                    streaming = threading.Thread(target=self._serve_streaming, name="rf-host-stream", daemon=True,
                                                 args=(host, message, worker, deadline))
                    streaming.start()
                elif step == "call":
                    worker.send(frame(self._serve_host(host, message)), deadline)
                else:  # "ended": the worker is gone
                    return self._ended(worker, started)
        except TimeoutError:
            return self._timed_out(worker, timeout_s, started)
        except OSError:  # broken pipe: the worker died under us
            return self._ended(worker, started)
        except ProtocolError as exc:
            return exchange.broken(exc)

    @staticmethod
    def _done(worker: WorkerProcess, message: dict[str, Any], chunks: list[Any], started: float) -> RunResult:
        duration = _ms_since(started)
        logs = message.get("logs") or ""
        if message.get("ok"):
            return RunResult(
                status="succeeded",
                output=chunks if message.get("chunked") else message.get("output"),
                logs=logs,
                duration_ms=duration,
                worker_pid=worker.pid,
                ops=message.get("ops"),
                spans=message.get("spans"),
            )
        result = _failed(
            str(message.get("error") or "the agent failed"),
            str(message.get("error_type") or "exception"),
            traceback=message.get("traceback"),
            logs=logs,
            duration_ms=duration,
            worker_pid=worker.pid,
        )
        result.ops = message.get("ops")
        result.spans = message.get("spans")
        return result

    @staticmethod
    def _timed_out(worker: WorkerProcess, timeout_s: float, started: float, during: str = "") -> RunResult:
        worker.kill(dump=True)
        logs, dump = worker.read_capture()
        location = worker.location_in(dump)
        where = f" (stuck at {location})" if location else ""
        return _failed(
            f"timed out after {_seconds(timeout_s)} s{during}{where}",
            "timeout",
            traceback=worker.relative_dump(dump),
            logs=logs,
            duration_ms=_ms_since(started),
            worker_pid=worker.pid,
        )

    @staticmethod
    def _ended(worker: WorkerProcess, started: float, during: str = "") -> RunResult:
        """The worker's pipe closed: it exited or crashed. Say which."""
        code = worker.reap()
        logs, dump = worker.read_capture()
        location = worker.location_in(dump)
        if worker.stop_reason:
            error, error_type = f"worker stopped: {worker.stop_reason}", "crash"
        elif code is None:
            error, error_type = f"worker stopped answering{during}", "crash"
        elif code < 0:
            at = f" at {location}" if location else ""
            error, error_type = f"worker crashed (signal {signal_name(-code)}{at}){during}", "crash"
        else:
            error, error_type = f"agent exited with code {code} (the worker process ended){during}", "exit"
        return _failed(
            error,
            error_type,
            traceback=worker.relative_dump(dump),
            logs=logs,
            duration_ms=_ms_since(started),
            worker_pid=worker.pid,
        )

    @classmethod
    def _serve_streaming(
        cls, host: HostHandler | None, message: dict[str, Any], worker: WorkerProcess, deadline: float
    ) -> None:
        """Serve a streaming host call (in a thread of its own): each piece goes to the worker
        as the host method produces it, then the reply. The run's loop meanwhile reads the
        worker's frames, so agent code can forward the pieces at once."""
        broken = False

        def sink(piece: str) -> None:
            nonlocal broken
            if not broken:
                try:
                    worker.send(frame(dumpb({"t": "piece", "data": piece})), deadline)
                except (OSError, TimeoutError):  # the worker is gone or stuck: the run's loop reports it
                    broken = True

        token = PIECE_SINK.set(sink)
        try:
            reply = cls._serve_host(host, message)
        finally:
            PIECE_SINK.reset(token)
        if not broken:
            try:
                worker.send(frame(reply), deadline)
            except (OSError, TimeoutError):
                pass

    @staticmethod
    def _serve_host(host: HostHandler | None, message: dict[str, Any]) -> bytes:
        """Answer a ``ctx.call_host`` request; errors go back, never tracebacks."""
        method = str(message.get("method"))
        params = message.get("params")
        if not isinstance(params, dict):
            params = {}
        error: dict[str, Any]
        if host is None:
            error = RfError("no host services in this run").to_dict()
        else:
            try:
                result = host(method, params)
            except RfError as exc:
                error = exc.to_dict()
            except Exception as exc:  # noqa: BLE001 - report, don't leak
                _log.warning("host service %r failed", method, exc_info=True)
                error = {
                    "code": "error",
                    "message": f"host service {method!r} failed ({type(exc).__name__})",
                    "hint": None,
                }
            else:
                try:
                    return dumpb({"t": "reply", "ok": True, "result": result})
                except (TypeError, ValueError):
                    error = {
                        "code": "error",
                        "message": f"host service {method!r} returned a value that is not JSON-serializable",
                        "hint": None,
                    }
        return dumpb({"t": "reply", "ok": False, "error": error})


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
