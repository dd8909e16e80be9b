"""The worker subprocess: ``python -m rf.runtime.worker CODE_DIR ENTRYPOINT [MAX_BYTES]``.

One worker serves one agent version, one execution at a time, for as long as
the host keeps it warm. It imports the entrypoint once at start-up, says
``ready`` (or ``init_error`` and exits), then loops: read a ``run`` message,
call the handler, answer ``done``.

File descriptors, and why:

- The protocol uses private duplicates of the original stdin/stdout pipes.
  fd 0 is then pointed at ``/dev/null`` and fd 1 at fd 2, so nothing the agent
  prints or reads (``print``, ``input()``, C extensions writing to fd 1,
  child processes) can corrupt the channel.
- fd 2 is a temporary file the host created and opened in append mode. All
  output lands there: Python-level ``sys.stdout``/``sys.stderr`` writes (via
  :class:`_CaptureStream`, which enforces the per-execution log budget),
  C-level writes, and ``faulthandler`` dumps. The worker reads and truncates
  it after each execution to fill ``logs``; because the host holds the same
  file, it can still read what a worker printed before it segfaulted or was
  killed for running too long.

The host enforces every deadline; the worker does plain blocking I/O.
This module imports only light standard-library modules (``traceback`` and
``asyncio`` are imported lazily) so a worker starts quickly.
"""

from __future__ import annotations

import _thread
import faulthandler
import importlib
import io
import os
import sys
import time
import types
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from rf.errors import InvalidAgent, PayloadTooLarge, RfError, from_dict
from rf.jsonfast import dumpb as fast_dumpb
from rf.runtime.context import Context
from rf.runtime.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    LOG_LIMIT_BYTES,
    BlockingChannel,
    describe_size,
    dumps,
    streams,
)

_THIS_FILE = os.path.abspath(__file__)
_RUNTIME_DIR = os.path.dirname(_THIS_FILE) + os.sep
_PARENT_CHECK_INTERVAL_S = 1.0


# --------------------------------------------------------------------------
# Entrypoints (shared with the host: rf.runtime.check and rf.runtime.pool)


class LoadError(Exception):
    """The entrypoint could not be loaded; ``kind`` says why."""

    def __init__(self, kind: str, message: str, traceback_text: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.traceback_text = traceback_text


def parse_entrypoint(entrypoint: str) -> tuple[str, str]:
    """Split ``"module:function"`` (module may be dotted) or raise ``InvalidAgent``."""
    module, sep, attr = entrypoint.partition(":")
    if (
        not sep
        or not module
        or not attr
        or not all(part.isidentifier() for part in module.split("."))
        or not all(part.isidentifier() for part in attr.split("."))
    ):
        raise InvalidAgent(
            f"invalid entrypoint {entrypoint!r}: expected 'module:function', e.g. 'agent:handle'",
            'set entrypoint in agent.toml to the module and the handler function, e.g. entrypoint = "agent:handle"',
        )
    return module, attr


def relative_path(filename: str, code_dir: str) -> str:
    """*filename* relative to the agent directory when it is inside it."""
    prefix = code_dir.rstrip(os.sep) + os.sep
    if filename.startswith(prefix):
        return filename[len(prefix) :]
    return filename


def _inside(filename: str, code_dir: str) -> bool:
    return filename.startswith(code_dir.rstrip(os.sep) + os.sep)


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()


def _safe_str(value: object) -> str:
    """``str(value)``, even for exceptions whose ``__str__`` is broken."""
    try:
        return str(value)
    except Exception:  # noqa: BLE001 - reporting must not fail
        return f"<unprintable {type(value).__name__}>"


def describe_exception(exc: BaseException, code_dir: str) -> tuple[str, str | None, str]:
    """Return ``(headline, location, traceback_text)`` for an agent exception.

    The location is the deepest frame inside the agent directory, because
    that is the line the agent's author can fix. The traceback drops the
    leading frames that belong to the worker (and asyncio) so it starts at
    the agent's code, and trailing ``rf.runtime`` frames (how an error from a
    host call got raised) that say nothing to the agent's author.
    """
    import traceback

    tb = exc.__traceback__
    start = None
    location = None
    walk = tb
    while walk is not None:
        filename = walk.tb_frame.f_code.co_filename
        if _inside(filename, code_dir):
            if start is None:
                start = walk
            location = f"{relative_path(filename, code_dir)}:{walk.tb_lineno}"
        walk = walk.tb_next
    if start is None:
        # Nothing in the agent's files (e.g. the handler has the wrong
        # signature): drop only the worker's own frames.
        start = tb
        while start is not None and start.tb_frame.f_code.co_filename == _THIS_FILE:
            start = start.tb_next
    message = _first_line(_safe_str(exc))
    headline = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    summary = traceback.TracebackException(type(exc), exc, start)
    if location is not None:
        while summary.stack and summary.stack[-1].filename.startswith(_RUNTIME_DIR):
            summary.stack.pop()
    _relative_frames(summary, code_dir)
    return headline, location, "".join(summary.format())


def _relative_frames(summary: Any, code_dir: str) -> None:
    """Show agent files as ``agent.py`` rather than the (cache) directory
    they were run from, through the whole ``__cause__``/``__context__`` chain."""
    seen: set[int] = set()
    pending = [summary]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        for frame_summary in current.stack:
            if _inside(frame_summary.filename, code_dir):
                frame_summary.filename = relative_path(frame_summary.filename, code_dir)
        pending.append(current.__cause__)
        pending.append(current.__context__)
        pending.extend(getattr(current, "exceptions", None) or ())


def _syntax_detail(exc: SyntaxError, code_dir: str) -> str:
    where = relative_path(exc.filename or "<unknown>", code_dir)
    if exc.lineno:
        where = f"{where}:{exc.lineno}"
    return f"{where}: {type(exc).__name__}: {exc.msg}"


def load_entrypoint(code_dir: str, entrypoint: str) -> Callable[..., Any]:
    """Import the entrypoint's module from *code_dir* and return the handler.

    Raises :class:`LoadError` with a one-line message saying what is wrong
    and where (``agent.py:3: SyntaxError: invalid syntax``).
    """
    try:
        module_name, attr = parse_entrypoint(entrypoint)
    except InvalidAgent as exc:
        raise LoadError("entrypoint", exc.message) from None
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        detail = _syntax_detail(exc, code_dir)
        raise LoadError(
            "syntax", f"cannot import module {module_name!r} ({detail})", _format_syntax_error(exc, code_dir)
        ) from None
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            expected = module_name.replace(".", os.sep)
            raise LoadError(
                "no_module",
                f"entrypoint {entrypoint!r}: no module {module_name!r} in {code_dir} "
                f"(expected {expected}.py or {expected}{os.sep}__init__.py)",
            ) from None
        raise _import_failure(module_name, exc, code_dir) from None
    except BaseException as exc:  # noqa: BLE001 - agent code may raise anything, even SystemExit
        raise _import_failure(module_name, exc, code_dir) from None
    module_file = getattr(module, "__file__", None)
    if module_file is None or not _inside(os.path.abspath(module_file), code_dir):
        raise LoadError(
            "no_module",
            f"entrypoint {entrypoint!r}: module {module_name!r} is not in {code_dir} "
            f"(it resolves to {module_file or 'a built-in module'})",
        )
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(
                "missing_attr",
                f"entrypoint {entrypoint!r}: module {module_name!r} has no function {attr!r}",
            ) from None
    if not callable(target):
        raise LoadError(
            "not_callable",
            f"entrypoint {entrypoint!r}: {attr!r} in module {module_name!r} is not callable "
            f"(it is a {type(target).__name__})",
        )
    return target  # type: ignore[no-any-return]


def _format_syntax_error(exc: SyntaxError, code_dir: str) -> str:
    """The caret display of a syntax error, without the import machinery's frames."""
    import traceback

    summary = traceback.TracebackException(type(exc), exc, None)
    if summary.filename and _inside(summary.filename, code_dir):
        summary.filename = relative_path(summary.filename, code_dir)
    return "".join(summary.format())


def _import_failure(module_name: str, exc: BaseException, code_dir: str) -> LoadError:
    headline, location, text = describe_exception(exc, code_dir)
    detail = f"{location}: {headline}" if location else headline
    return LoadError("import", f"cannot import module {module_name!r} ({detail})", text)


# --------------------------------------------------------------------------
# Output capture


class _CaptureBuffer(io.RawIOBase):
    """``sys.stdout.buffer`` stand-in: bytes writes share the text stream's budget."""

    def __init__(self, owner: _CaptureStream) -> None:
        super().__init__()
        self._owner = owner

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = bytes(data)
        self._owner.write_bytes(raw)
        return len(raw)

    def fileno(self) -> int:
        return self._owner.fileno()


class _CaptureStream(io.TextIOBase):
    """Replacement for ``sys.stdout``/``sys.stderr`` inside the worker.

    Writes go straight to the capture file (no buffering, so nothing is lost
    if the process dies next), up to ``LOG_LIMIT_BYTES`` per execution; the
    rest is counted, not written, so an agent printing in a loop cannot fill
    the disk.
    """

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, fd: int) -> None:
        super().__init__()
        self._fd = fd
        self.written = 0
        self.dropped = 0
        self._buffer = _CaptureBuffer(self)

    @property
    def buffer(self) -> _CaptureBuffer:
        return self._buffer

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def flush(self) -> None:
        pass

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self.write_bytes(text.encode("utf-8", "replace"))
        return len(text)

    def write_bytes(self, data: bytes) -> None:
        room = LOG_LIMIT_BYTES - self.written
        if len(data) > room:
            self.dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        if data:
            self.written += len(data)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError:
                pass

    def begin(self) -> None:
        """Start a new execution's logs: forget whatever came before."""
        self.written = 0
        self.dropped = 0
        try:
            if os.fstat(self._fd).st_size:
                os.ftruncate(self._fd, 0)
        except OSError:
            pass

    def end(self) -> str:
        """This execution's logs (truncated with a marker) and reset the file."""
        try:
            size = os.fstat(self._fd).st_size
        except OSError:
            return ""
        if not size and not self.dropped:
            return ""
        data = os.pread(self._fd, min(size, LOG_LIMIT_BYTES), 0) if size else b""
        os.ftruncate(self._fd, 0)
        extra = max(size - LOG_LIMIT_BYTES, 0) + self.dropped
        self.written = 0
        self.dropped = 0
        return truncated_logs(data, extra)


def truncated_logs(data: bytes, extra: int) -> str:
    """Decode captured output, adding a marker when *extra* bytes were cut."""
    text = data.decode("utf-8", "replace")
    if extra > 0:
        if text and not text.endswith("\n"):
            text += "\n"
        text += f"[logs truncated: {extra} more bytes not shown]\n"
    return text


# --------------------------------------------------------------------------
# The worker


class _OutputError(Exception):
    """The handler's output cannot be sent (not JSON, or too large)."""


class HostStream:
    """The answer to a streaming host call (see rf.runtime.protocol): its pieces as the
    host sends them, then its result. Iterating yields every piece (again from the
    start on a second pass); :meth:`result` waits for the reply. The worker's other
    host calls first read whatever is left of it."""

    def __init__(self, worker: Worker, method: str) -> None:
        self._worker = worker
        self._method = method
        self.pieces: list[str] = []
        self._reply: dict[str, Any] | None = None

    def read_locked(self) -> None:
        """Read one message of the answer (the caller holds the worker's call lock)."""
        message = self._worker.channel.read()
        if message is not None and message.get("t") == "piece":
            data = message.get("data")
            self.pieces.append(data if isinstance(data, str) else str(data))
            return
        if message is None:
            os._exit(0)  # the host is gone; nothing more to do in this process
        self._reply = message
        self._worker._stream = None

    def drain_locked(self) -> None:
        while self._reply is None:
            self.read_locked()

    def __iter__(self) -> Iterator[str]:
        index = 0
        while True:
            if index < len(self.pieces):
                yield self.pieces[index]
                index += 1
                continue
            if self._reply is not None:
                self.result()  # a failed call raises here, after the pieces that came
                return
            with self._worker._call_lock:
                if self._reply is None and index >= len(self.pieces):
                    self.read_locked()

    def result(self) -> Any:
        """The call's result (waits for the end of the stream); its error raised."""
        if self._reply is None:
            with self._worker._call_lock:
                self.drain_locked()
        return self._worker.answer(self._method, self._reply)


class Worker:
    """State of one worker process: the handler, the channel, the capture."""

    def __init__(
        self,
        channel: BlockingChannel,
        capture: _CaptureStream,
        code_dir: str,
        handler: Callable[..., Any],
        max_bytes: int,
    ) -> None:
        self.channel = channel
        self.capture = capture
        self.code_dir = code_dir
        self.handler = handler
        self.max_bytes = max_bytes
        self._loop: Any = None
        self._call_lock = _thread.allocate_lock()
        self._stream: HostStream | None = None  # a streaming host call whose reply is still to come

    # -- host services ------------------------------------------------------

    def call_host(self, method: str, params: dict[str, Any]) -> Any:
        """Synchronous request/response with the host (``ctx.call_host``)."""
        try:
            payload = dumps({"t": "call", "method": method, "params": params})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"ctx.call_host({method!r}): parameters are not JSON-serializable: {exc}") from None
        if len(payload) > self.max_bytes:
            raise PayloadTooLarge(
                f"ctx.call_host({method!r}): parameters are too large "
                f"({describe_size(len(payload))}; the limit is {describe_size(self.max_bytes)})"
            )
        # Threads an agent starts may share ctx: one request/response at a time.
        with self._call_lock:
            if self._stream is not None:
                self._stream.drain_locked()  # the channel is free once its reply has been read
            self.channel.send_payload(payload)
            if streams(method, params):
                # The answer comes as pieces, then the reply: read as agent code iterates.
                stream = self._stream = HostStream(self, method)
                return stream
            reply = self.channel.read()
        return self.answer(method, reply)

    def answer(self, method: str, reply: dict[str, Any] | None) -> Any:
        """A host call's result from its ``reply`` message (its error raised)."""
        if reply is None:
            # The host is gone; nothing more to do in this process.
            os._exit(0)
        if reply.get("t") != "reply":
            raise RfError(f"ctx.call_host({method!r}): unexpected message from the host")
        if reply.get("ok"):
            return reply.get("result")
        raise from_dict(reply.get("error") or {})

    def end_stream(self) -> None:
        """Read what is left of a streaming call agent code did not finish reading."""
        if self._stream is not None:
            with self._call_lock:
                if self._stream is not None:
                    self._stream.drain_locked()

    # -- runs -------------------------------------------------------------------

    def serve(self) -> None:
        """Answer ``run`` messages until the host closes the pipe."""
        while True:
            message = self.channel.read()
            if message is None:
                return
            if message.get("t") == "run":
                self.channel.send_payload(self.run(message))

    def run(self, message: dict[str, Any]) -> bytes:
        """Execute one run message; return the encoded ``done`` message."""
        stream = bool(message.get("stream"))
        capture = self.capture
        # Agent code may have swapped these during an earlier run.
        sys.stdout = sys.stderr = capture
        ctx = Context(
            env=str(message.get("env", "")),
            agent=str(message.get("agent", "")),
            execution_id=str(message.get("id", "")),
            session_id=message.get("session_id"),
            host=self.call_host,
            log_stream=capture,
        )
        ctx._final_ops_ok = True
        root = message.get("trace_root")
        ctx._trace_root = root if isinstance(root, str) else None
        capture.begin()
        failure: tuple[str, str, str | None] | None = None
        try:
            output, chunked = self._call(message.get("input"), ctx, stream)
        except _OutputError as exc:
            failure = (str(exc), "output", None)
        except SystemExit as exc:
            code = exc.code
            if code is None or isinstance(code, int):
                error = f"agent exited with code {code or 0} (sys.exit)"
            else:
                error = f"agent exited: {_first_line(_safe_str(code))} (sys.exit)"
            _, _, text = describe_exception(exc, self.code_dir)
            failure = (error, "exit", text)
        except BaseException as exc:  # noqa: BLE001 - report anything the agent raises
            headline, location, text = describe_exception(exc, self.code_dir)
            failure = (f"{headline} ({location})" if location else headline, "exception", text)
        finally:
            self.end_stream()
            ctx._end()  # pending deferred calls and spans move to ctx._final_ops/_final_spans
        ops = b""
        if ctx._final_ops:
            try:
                # msgspec (imported on the first run that has any): each op was checked
                # as strict JSON when it was made, and this is several times faster.
                ops = b',"ops":' + fast_dumpb(ctx._final_ops)
            except (TypeError, ValueError) as exc:  # checked when each call was made: should not happen
                failure = failure or (f"deferred ctx calls could not be sent: {exc}", "exception", None)
        if ctx._final_spans:
            from rf.runtime.ctx_trace import encode_spans  # already imported: spans were made

            try:  # one JSON text of span rows, sent as a string
                ops += b',"spans":' + fast_dumpb(encode_spans(ctx._final_spans))
            except (TypeError, ValueError) as exc:  # checked when each span was made: should not happen
                failure = failure or (f"custom spans could not be sent: {exc}", "exception", None)
        if ctx._final_spans_error:
            failure = failure or (ctx._final_spans_error, "exception", None)
        ctx._release()
        if failure is not None:
            return self._failure(*failure, ops)
        logs = dumps(capture.end())
        if chunked:
            return b'{"t":"done","ok":true,"chunked":true,"logs":' + logs + ops + b"}"
        return b'{"t":"done","ok":true,"logs":' + logs + ops + b',"output":' + output + b"}"

    def _failure(self, error: str, error_type: str, traceback_text: str | None, ops: bytes = b"") -> bytes:
        encoded = dumps(
            {
                "t": "done",
                "ok": False,
                "error": error,
                "error_type": error_type,
                "traceback": traceback_text,
                "logs": self.capture.end(),
            }
        )
        return encoded[:-1] + ops + b"}" if ops else encoded

    def _encode(self, value: Any, what: str) -> bytes:
        try:
            data = dumps(value)
        except (TypeError, ValueError, RecursionError) as exc:
            raise _OutputError(f"{what} is not JSON-serializable: {exc}") from None
        if len(data) > self.max_bytes:
            raise _OutputError(
                f"{what} is too large ({describe_size(len(data))}; the limit is {describe_size(self.max_bytes)})"
            )
        return data

    def _call(self, value: Any, ctx: Context, stream: bool) -> tuple[bytes, bool]:
        """Call the handler; return ``(encoded output, whether it was streamed)``."""
        result = self.handler(value, ctx)
        if isinstance(result, types.GeneratorType):
            return self._drain(result, stream)
        if isinstance(result, types.AsyncGeneratorType):
            return self._drain(self._async_items(result), stream)
        if isinstance(result, types.CoroutineType) or hasattr(type(result), "__await__"):
            result = self._event_loop().run_until_complete(result)
        return self._encode(result, "output"), False

    def _drain(self, items: Iterator[Any], stream: bool) -> tuple[bytes, bool]:
        """Collect a generator's items; stream them to the host if asked."""
        encoded: list[bytes] = []
        total = 2
        try:
            for index, item in enumerate(items):
                data = self._encode(item, f"output chunk {index}")
                total += len(data) + 1
                if total > self.max_bytes:
                    raise _OutputError(f"output is too large (more than {describe_size(self.max_bytes)} of chunks)")
                if stream:
                    self.channel.send_payload(b'{"t":"chunk","data":' + data + b"}")
                else:
                    encoded.append(data)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        if stream:
            return b"", True
        return b"[" + b",".join(encoded) + b"]", False

    def _async_items(self, agen: Any) -> Iterator[Any]:
        loop = self._event_loop()
        try:
            while True:
                try:
                    item = loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
                yield item
        finally:
            if not loop.is_closed() and not loop.is_running():
                loop.run_until_complete(agen.aclose())

    def _event_loop(self) -> Any:
        """One event loop per worker, created on first use.

        Kept across runs so async clients an agent caches at module level
        stay usable; asyncio is imported only by agents that need it.
        """
        if self._loop is None or self._loop.is_closed():
            import asyncio

            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        return self._loop


# --------------------------------------------------------------------------
# Process set-up


def _watch_parent(parent: int) -> None:
    """Exit when the host dies, even if a handler is stuck in a loop.

    An idle worker notices the host's death as end of file on stdin; this
    covers a busy one. (``PR_SET_PDEATHSIG`` would fire when the *thread*
    that spawned us exits, which in a threaded server is far too early.)
    """
    while True:
        time.sleep(_PARENT_CHECK_INTERVAL_S)
        if os.getppid() != parent:
            os._exit(0)


def _setup_fds() -> tuple[int, int, int]:
    """Move the protocol off fds 0/1 and route all output to the capture file.

    Returns ``(read_fd, write_fd, capture_fd)``.
    """
    read_fd = os.dup(0)  # os.dup makes non-inheritable fds: children never see them
    write_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    capture_fd = 2
    try:
        regular = _is_regular(capture_fd)
    except OSError:
        regular = False
    if not regular:
        # Started by hand (stderr is a terminal or a pipe): capture to our own file.
        import tempfile

        handle = tempfile.TemporaryFile(prefix="rf-worker-")  # noqa: SIM115 - only its fd is kept
        os.dup2(handle.fileno(), 2)
        handle.close()
        _set_append(2)
    os.dup2(2, 1)
    return read_fd, write_fd, capture_fd


def _is_regular(fd: int) -> bool:
    import stat

    return stat.S_ISREG(os.fstat(fd).st_mode)


def _set_append(fd: int) -> None:
    import fcntl

    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)


def _fatal(message: str) -> NoReturn:
    os.write(2, f"rf worker: {message}\n".encode())
    os._exit(2)


def main(argv: list[str] | None = None) -> int:
    """Worker entry point; see the module docstring for the protocol."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        _fatal("usage: python -m rf.runtime.worker CODE_DIR ENTRYPOINT [MAX_MESSAGE_BYTES]")
    code_dir = os.path.realpath(args[0])
    entrypoint = args[1]
    max_bytes = int(args[2]) if len(args) == 3 else DEFAULT_MAX_MESSAGE_BYTES

    read_fd, write_fd, capture_fd = _setup_fds()
    channel = BlockingChannel(read_fd, write_fd)
    capture = _CaptureStream(capture_fd)
    sys.stdout = sys.stderr = capture
    faulthandler.enable(file=capture_fd, all_threads=True)
    if hasattr(faulthandler, "register"):
        import signal

        # The host sends SIGUSR1 before killing a run that timed out, so the
        # result can say where the handler was stuck.
        faulthandler.register(signal.SIGUSR1, file=capture_fd, all_threads=True, chain=False)
    _thread.start_new_thread(_watch_parent, (os.getppid(),))

    # The agent's directory first on sys.path, so its modules import; but the working
    # directory stays the empty one the host started us in (never the commit directory:
    # agents read their own files through Path(__file__).parent).
    sys.path.insert(0, code_dir)
    try:
        handler = load_entrypoint(code_dir, entrypoint)
    except LoadError as exc:
        channel.send(
            {
                "t": "init_error",
                "kind": exc.kind,
                "message": exc.message,
                "traceback": exc.traceback_text,
                "logs": capture.end(),
            }
        )
        return 1
    # What the import loaded lives as long as the worker: keep it out of the collector's
    # generations, so the collections runs trigger walk only what runs allocate.
    import gc

    gc.collect()
    gc.freeze()
    channel.send({"t": "ready", "pid": os.getpid()})
    Worker(channel, capture, code_dir, handler, max_bytes).serve()
    return 0


if __name__ == "__main__":
    # os._exit: skip interpreter teardown (and any atexit hooks agent code
    # registered) once the host is done with us.
    os._exit(main())
