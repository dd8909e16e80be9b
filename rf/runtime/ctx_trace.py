"""``ctx.trace`` inside the worker: custom spans, and the outbox of deferred host calls.

``with ctx.trace.span("lookup", customer=42) as span:`` times a block of
agent code; host calls made inside it (LLM, connectors, memory...) become
its children, and spans nest. An exception leaving the block marks the span
as failed (and still propagates).

**The outbox.** A host round trip costs tens of microseconds; appending to a
list costs nanoseconds. Calls whose answer agent code does not wait for —
finished custom spans, ``ctx.memory.set``/``delete``, ``ctx.session.append``
— are validated here (so mistakes raise at the call site) and kept in an
:class:`Outbox` with the time they were made and the span they were made in.
The outbox rides along with the next host call agent code makes (so the host
replays them, in order, before answering it) and is flushed in one call when
the handler returns — or earlier, when it grows large or old, so a handler
that then hangs loses at most a fraction of a second of spans.

Finished custom spans are kept in the form the store keeps them (rows of
``span_batches``, see rf.services.span_rows) and sent as one JSON text, so
the host can check them in one typed decode and store them as they are.
"""

from __future__ import annotations

import _thread
import contextvars
import json
import random
import time
from typing import TYPE_CHECKING, Any

from rf.errors import RfError, UsageError
from rf.jsonfast import dumpb as fast_dumpb

if TYPE_CHECKING:
    from types import TracebackType

    from rf.runtime.context import Context

#: Names shared with rf.services.traces (the host side).
OPS_PARAM = "_rf_ops"
SPANS_PARAM = "_rf_spans"
PARENT_PARAM = "_rf_parent"

_MAX_OPS = 256
_MAX_BYTES = 1024 * 1024
_MAX_AGE_NS = 200_000_000  # 0.2 s
#: Pending calls up to this size ride on the worker's "done" message when the
#: handler returns; more go in one last ``trace.flush`` call (so the output's
#: own size limit never has to make room for them).
_FINAL_MAX_BYTES = 256 * 1024
_NAME_MAX = 200
_ERROR_MAX = 2000

#: The innermost open custom span: ``(execution id, span id)``. A context
#: variable, so threads and asyncio tasks each nest their own spans.
_current: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("rf_span", default=None)


def outbox(ctx: Context) -> Outbox:
    """The execution's outbox (created on first use; it then carries every host call)."""
    return ctx._service("outbox", Outbox)


class Outbox:
    """Host calls and finished spans deferred until the next call, the end of the handler,
    or a size/age limit."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._execution_id = ctx.execution_id
        self._root = ctx._trace_root
        self._raw = ctx._host
        self._ops: list[list[Any]] = []
        self._spans: list[list[Any]] = []  #: span rows, ready to store (rf.services.span_rows)
        self._bytes = 0
        self._first_ns = 0
        self._lock = _thread.allocate_lock()
        if self._raw is not None:
            # Every later host call of this execution carries the pending
            # ones, and the end of the handler flushes what is left.
            ctx._host = self._send
            self._end = ctx._end
            ctx._end = self._on_end  # type: ignore[method-assign]

    def current_span(self) -> str | None:
        """The id of the innermost open custom span in this thread/task, if any."""
        current = _current.get()
        if current is None or current[0] != self._ctx.execution_id:
            return None
        return current[1]

    def _check_active(self, method: str) -> None:
        if not self._ctx._active:
            raise RfError(
                f"ctx {method} was called after execution {self._ctx.execution_id} ended",
                "use ctx only while the handler runs (not from leftover threads or tasks)",
            )
        if self._raw is None:
            raise RfError("no host services in this run")

    def defer(self, method: str, params: dict[str, Any], size: int = 0) -> None:
        """Queue a host call whose answer nobody waits for."""
        if not self._ctx._active or self._raw is None:
            self._check_active(method)  # raises
        now = time_ns()
        current = _current.get()
        parent = current[1] if current is not None and current[0] == self._execution_id else None
        lock = self._lock
        lock.acquire()  # (cheaper than a ``with`` block: see Span.__exit__)
        try:
            ops = self._ops
            if not ops and not self._spans:
                self._first_ns = now
            ops.append([method, params, now, parent])
            self._bytes += size + 64
            full = (len(ops) + len(self._spans) >= _MAX_OPS or self._bytes >= _MAX_BYTES
                    or now - self._first_ns >= _MAX_AGE_NS)
        finally:
            lock.release()
        if full:
            self.flush()

    def flush(self) -> None:
        """Send what is pending now (one host call)."""
        if self._ops or self._spans:
            self._ctx.call_host("trace.flush")

    def _take(self) -> tuple[list[list[Any]], list[list[Any]]]:
        with self._lock:
            ops, spans = self._ops, self._spans
            self._ops, self._spans, self._bytes = [], [], 0
        return ops, spans

    def _send(self, method: str, params: dict[str, Any]) -> Any:
        assert self._raw is not None
        ops, spans = self._take() if self._ops or self._spans else (None, None)
        parent = self.current_span()
        if ops or spans or parent:
            params = dict(params)
            if ops:
                params[OPS_PARAM] = ops
            if spans:
                params[SPANS_PARAM] = encode_spans(spans)
            if parent:
                params[PARENT_PARAM] = parent
        return self._raw(method, params)

    def _on_end(self) -> None:
        try:
            if self._ops or self._spans:
                fits = self._ctx._final_ops_ok and self._bytes <= _FINAL_MAX_BYTES
                ops, spans = self._take()
                if fits:
                    # The worker sends them inside its "done" message: no extra round trip.
                    self._ctx._final_ops = ops or None
                    self._ctx._final_spans = spans or None
                else:
                    params: dict[str, Any] = {}
                    if ops:
                        params[OPS_PARAM] = ops
                    if spans:
                        try:
                            params[SPANS_PARAM] = encode_spans(spans)
                        except (TypeError, ValueError) as exc:  # checked when made: should not happen
                            self._ctx._final_spans_error = f"custom spans could not be sent: {exc}"
                    self._raw("trace.flush", params)  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - the host recorded the failure; the run's own result stands
            pass
        finally:
            self._end()


def encode_spans(spans: list[list[Any]]) -> str:
    """Span rows as one JSON text (msgspec: their attributes were checked as JSON already)."""
    return fast_dumpb(spans).decode("utf-8")


_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False)
#: Span ids need to be unique, not secret: no system call per span.
_random = random.Random()
_getrandbits = _random.getrandbits
#: 16 hex digits: %-formatting is ~3x faster than f"{n:016x}" (a span id per span).
_hex16 = "%016x".__mod__
time_ns = time.time_ns


def encode_json(value: Any) -> str:
    """``value`` as strict JSON text; TypeError/ValueError if it is not JSON."""
    return _ENCODER.encode(value)


def json_size(value: Any) -> int:
    """Length of ``value`` as strict JSON; TypeError/ValueError if it is not JSON."""
    return len(_ENCODER.encode(value))


_SCALARS = (str, int, bool, type(None))


def check_attributes(call: str, attributes: dict[str, Any], span: str | None = None) -> int:
    """Refuse attributes that are not JSON (naming the first bad one); their encoded size
    (estimated without encoding when every value is a string, int, bool or None).
    ``call`` (and ``span``, its name) say where, in the error."""
    size = 2
    for key, value in attributes.items():
        if type(value) not in _SCALARS or (type(value) is str and not value.isascii()):
            break
        size += len(key) + (len(value) + 6 if type(value) is str else 8)
    else:
        return size
    if span is not None:
        call = f"ctx.trace.span({span!r})" if call == "ctx.trace.span" else f"span {span!r}.set()"
    where = call
    try:
        return len(encode_json(attributes).encode("utf-8"))  # UTF-8 too: no lone surrogates
    except (TypeError, ValueError):
        pass
    for key, value in attributes.items():
        try:
            encode_json(value).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(f"{where}: attribute {key!r} is not valid text ({exc.reason})",
                             "pass text that can be encoded as UTF-8") from None
        except (TypeError, ValueError) as exc:
            raise UsageError(
                f"{where}: attribute {key!r} is not JSON-serializable ({type(value).__name__}: {exc})",
                "pass strings, numbers, booleans, None, lists or dicts (e.g. str(value))",
            ) from None
    raise UsageError(f"{where}: attributes are not JSON-serializable")


class Span:
    """A custom span; use it as ``with ctx.trace.span(...) as span:`` (or ``async with``).

    It is sent to the host, complete, when the block ends (one deferred
    ``trace.span`` call): a span that never ends is never recorded.
    """

    __slots__ = ("_attributes", "_outbox", "_size", "_start", "_token", "id", "name")

    def __init__(self, box: Outbox, name: str, attributes: dict[str, Any]) -> None:
        self._outbox = box
        self.name = name
        self.id = _hex16(_getrandbits(64))
        size = 0
        if attributes:
            # The common case inline (one plain value, e.g. n=3); check_attributes otherwise.
            if len(attributes) == 1:
                for key, value in attributes.items():
                    kind = type(value)
                    if kind is int or kind is bool or value is None:
                        size = len(key) + 10
                    elif kind is str and value.isascii():  # (isascii() is O(1))
                        size = len(key) + len(value) + 8
            if not size:
                size = check_attributes("ctx.trace.span", attributes, name)
        self._size = size
        self._attributes = attributes
        self._start = 0
        self._token: contextvars.Token[tuple[str, str] | None] | None = None

    def set(self, **attributes: Any) -> None:
        """Add attributes to the span (recorded when it ends)."""
        self._size += check_attributes("span.set", attributes, self.name)
        self._attributes.update(attributes)

    def __enter__(self) -> Span:
        self._token = _current.set((self._outbox._execution_id, self.id))
        self._start = time_ns()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            try:
                _current.reset(self._token)
            except ValueError:  # exited in another context (e.g. a generator resumed elsewhere)
                pass
            self._token = None
        box = self._outbox
        if not box._ctx._active or box._raw is None:
            box._check_active("trace.span")  # raises
        # The span, as the store keeps it (rf.services.span_rows): the host checks it and,
        # usually, stores it as it is. Its parent is the enclosing span, or the root.
        now = time_ns()
        current = _current.get()
        parent = current[1] if current is not None and current[0] == box._execution_id else box._root
        if exc is None:
            row = [self.id, parent, "custom", self.name, self._start, now, "ok", None, self._attributes]
        else:
            row = [self.id, parent, "custom", self.name, self._start, now, "error",
                   f"{type(exc).__name__}: {exc}"[:_ERROR_MAX], self._attributes]
        lock = box._lock
        lock.acquire()  # (a ``with`` block costs three times as much, once per span)
        try:
            spans = box._spans
            if not spans and not box._ops:
                box._first_ns = now
            spans.append(row)
            box._bytes += self._size + 96
            full = (len(spans) + len(box._ops) >= _MAX_OPS or box._bytes >= _MAX_BYTES
                    or now - box._first_ns >= _MAX_AGE_NS)
        finally:
            lock.release()
        if full:
            box.flush()

    async def __aenter__(self) -> Span:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


class Trace:
    """``ctx.trace``: custom spans in this execution's trace."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._outbox = outbox(ctx)

    def span(self, name: str, **attributes: Any) -> Span:
        """A span around a block: ``with ctx.trace.span("step", n=3): ...``.

        Attributes must be JSON values (a UsageError names the first one that
        is not, and no span is started).
        """
        if not isinstance(name, str) or not (1 <= len(name) <= _NAME_MAX):
            raise UsageError(f"ctx.trace.span: the name must be a string of 1 to {_NAME_MAX} characters")
        if not name.isascii():
            try:
                name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise UsageError(f"ctx.trace.span: the name is not valid text ({exc.reason})") from None
        return Span(self._outbox, name, attributes)

    @property
    def current_span_id(self) -> str | None:
        """The innermost open custom span of this thread/task (None outside any)."""
        return self._outbox.current_span()
