"""Message framing between the host and a worker subprocess.

Why length-prefixed JSON on plain pipes: a frame is a 4-byte big-endian length
followed by that many bytes of UTF-8 JSON. The length comes first so the host
can refuse an oversized message (a handler returning gigabytes) *before*
reading it, and so no escaping or scanning for delimiters is needed. Pipes are
the cheapest IPC that works everywhere the host runs; a warm round trip costs
two small writes, two reads and a ``poll``.

Messages are JSON objects with a ``"t"`` (type) field.

Host -> worker:

- ``{"t": "run", "id", "env", "agent", "session_id", "stream", "trace_root", "input"}``
- ``{"t": "reply", "ok": true, "result": ...}`` or
  ``{"t": "reply", "ok": false, "error": {"code", "message", "hint"}}``
  (answer to a ``call``)
- ``{"t": "piece", "data": "text"}`` zero or more, before the ``reply`` to a
  streaming call (``llm.chat`` with ``"stream": true``): each text piece as
  the provider sent it. While that call runs the host keeps reading the
  worker's frames, so agent code can forward pieces as ``chunk`` frames at
  once; the worker reads every piece and the reply before its next ``call``
  or its ``done``.

Worker -> host:

- ``{"t": "ready", "pid"}`` once the entrypoint is imported, or
  ``{"t": "init_error", "kind", "message", "traceback", "logs"}`` (then it exits)
- ``{"t": "chunk", "data"}`` one streamed item (only when the run asked to stream)
- ``{"t": "call", "method", "params"}`` a host service request from ``ctx``
- ``{"t": "done", "ok": true, "output", "logs"}`` (``"chunked": true`` instead of
  ``output`` when the chunks were streamed) or
  ``{"t": "done", "ok": false, "error", "error_type", "traceback", "logs"}``

  Either may carry ``"ops"``: the deferred ctx calls still pending when the
  handler returned (see rf.runtime.ctx_trace), replayed by the host before it
  records the execution; and ``"spans"``: the custom spans still pending, as
  one JSON text (a string) of span rows (see rf.services.span_rows).

The ``run`` message also carries ``"trace_root"``: the id of the execution's
root span, which the worker gives as the parent of top-level custom spans.

This module is imported by the worker, so it only uses the standard library's
light modules (``select`` is a C extension and costs nothing to import) and
``rf.jsonfast``, which the host's reader uses and which imports msgspec only
when first called.
"""

from __future__ import annotations

import contextvars
import json
import os
import select
import struct
import time
from collections.abc import Callable
from typing import Any

from rf.jsonfast import loads as fast_loads

HEADER = struct.Struct(">I")
#: Default cap on one message's payload (outputs, chunks, host call params).
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Room the host allows above the payload cap for the envelope and the logs.
ENVELOPE_SLACK_BYTES = 1024 * 1024
#: Per-execution cap on captured logs.
LOG_LIMIT_BYTES = 64 * 1024

#: Where the pieces of the streaming host call being served go (set by the pool, in
#: the thread serving it; read by the host method, e.g. ``llm.chat``). None: no one
#: is listening, the method returns the pieces with its result instead.
PIECE_SINK: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("rf_piece_sink",
                                                                                          default=None)


def streams(method: Any, params: Any) -> bool:
    """Whether a host call is answered with pieces before its reply (see the module docs)."""
    return method == "llm.chat" and type(params) is dict and params.get("stream") is True


_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_decoder = json.JSONDecoder()


class ProtocolError(Exception):
    """The other side sent something that is not a valid frame."""


class FrameTooLarge(ProtocolError):
    """A frame's announced length is above the reader's limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes is above the limit of {limit} bytes")
        self.size = size
        self.limit = limit


def dumps(value: Any) -> bytes:
    """Encode *value* as compact, strict JSON (no NaN/Infinity).

    Raises ``TypeError``/``ValueError`` for values JSON cannot represent;
    callers turn that into a clear "not JSON-serializable" error.
    """
    return _encoder.encode(value).encode("utf-8")


def loads(data: bytes | bytearray | memoryview) -> Any:
    """Decode one frame payload."""
    try:
        return _decoder.decode(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None


def frame(payload: bytes) -> bytes:
    """Prefix an encoded payload with its length."""
    return HEADER.pack(len(payload)) + payload


def describe_size(n: int) -> str:
    """Human-readable size for error messages."""
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} bytes"


def write_all_blocking(fd: int, data: bytes) -> None:
    """Write every byte of *data* to a blocking fd (the worker's side)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def write_all(fd: int, data: bytes, deadline: float | None) -> None:
    """Write every byte of *data* to a non-blocking fd, giving up at *deadline*.

    The host side uses this so that a wedged worker whose pipe is full cannot
    block a server thread forever. Raises ``TimeoutError`` at the deadline and
    ``BrokenPipeError`` if the worker is gone.
    """
    view = memoryview(data)
    poller: select.poll | None = None
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            written = 0
        view = view[written:]
        if not view:
            return
        if poller is None:
            poller = select.poll()
            poller.register(fd, select.POLLOUT)
        timeout_ms = _remaining_ms(deadline)
        if timeout_ms == 0:
            raise TimeoutError
        events = poller.poll(timeout_ms)
        if not events and deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError


def _remaining_ms(deadline: float | None) -> int | None:
    if deadline is None:
        return None
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return 0
    return max(1, int(remaining * 1000 + 0.999))


class FrameReader:
    """Reads frames from a non-blocking fd with a deadline (the host's side).

    The calling thread blocks in ``poll`` on the pipe itself, so a run costs
    no extra thread and a hung worker is noticed exactly at the deadline.
    ``poll`` rather than ``select`` because a busy server can have fd numbers
    above ``FD_SETSIZE``.
    """

    def __init__(self, fd: int, max_frame_bytes: int) -> None:
        self.fd = fd
        self.max_frame_bytes = max_frame_bytes
        self.last_frame_bytes = 0
        self._buf = bytearray()
        os.set_blocking(fd, False)
        self._poller = select.poll()
        self._poller.register(fd, select.POLLIN | select.POLLPRI)

    def read(self, deadline: float | None) -> Any:
        """Return the next decoded message, or ``None`` at end of file.

        Raises ``TimeoutError`` at *deadline*, :class:`FrameTooLarge` when the
        announced length is above the limit (without reading the payload) and
        :class:`ProtocolError` for undecodable payloads.
        """
        while True:
            message = self.read_nowait()
            if message is not NEED_MORE:
                return message
            timeout_ms = _remaining_ms(deadline)
            if timeout_ms == 0:
                raise TimeoutError
            self._poller.poll(timeout_ms)

    def read_nowait(self) -> Any:
        """The next message if a whole frame is buffered or readable right now,
        else :data:`NEED_MORE` — for callers that wait for readability
        themselves (an asyncio event loop with ``add_reader``)."""
        buf = self._buf
        while True:
            if len(buf) >= 4:
                (size,) = HEADER.unpack_from(buf)
                if size > self.max_frame_bytes:
                    raise FrameTooLarge(size, self.max_frame_bytes)
                end = 4 + size
                if len(buf) >= end:
                    payload = bytes(buf[4:end])
                    del buf[:end]
                    self.last_frame_bytes = size
                    try:
                        return fast_loads(payload)  # the host side: msgspec, strict JSON
                    except ValueError as exc:
                        raise ProtocolError(f"malformed message: {exc}") from None
                want = end - len(buf)
            else:
                want = 4 - len(buf)
            try:
                chunk = os.read(self.fd, min(max(want, 65536), 1 << 20))
            except BlockingIOError:
                return NEED_MORE
            if not chunk:
                return None
            buf += chunk


#: What :meth:`FrameReader.read_nowait` returns when no whole frame is there yet.
NEED_MORE = object()


class BlockingChannel:
    """Frame reader/writer over blocking fds (the worker's side).

    The worker does one thing at a time, so plain blocking I/O is the
    simplest correct choice; the host enforces every deadline.
    """

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self._reader = open(read_fd, "rb", buffering=65536)  # noqa: SIM115 - lives as long as the worker
        self._write_fd = write_fd

    def read(self) -> Any:
        """Next message from the host, or ``None`` when the host went away."""
        header = self._reader.read(4)
        if len(header) < 4:
            return None
        (size,) = HEADER.unpack(header)
        payload = self._reader.read(size)
        if len(payload) < size:
            return None
        return loads(payload)

    def send(self, message: dict[str, Any]) -> None:
        self.send_payload(dumps(message))

    def send_payload(self, payload: bytes) -> None:
        """Send an already-encoded JSON object (lets callers splice raw JSON)."""
        write_all_blocking(self._write_fd, frame(payload))
