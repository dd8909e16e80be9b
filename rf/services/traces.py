"""Traces: one span tree per execution, per environment; OTLP export.

Every execution gets a trace (one trace id) whose **root span** (kind
``agent``) covers the whole run. Each host call the agent makes through
``ctx`` becomes a **child span** whose kind comes from the method's prefix
(``llm.chat`` → ``llm``), and ``with ctx.trace.span("name", **attrs):`` makes
**custom spans**; host calls made inside a custom span are its children.

How much a span keeps depends on the agent's ``trace`` mode (agent.toml):
``full`` keeps inputs and outputs (as JSON values in the ``input``/``output``
attributes), ``standard`` keeps those whose JSON fits in ``trace_max_chars``
(default 2000) and truncates the others to that many characters of text,
``minimal`` keeps timing and status only.
Whatever the mode, every secret the execution registered
(:meth:`HostCall.secret`) is replaced by ``[REDACTED]`` in every attribute,
span name and error, and in the execution's logs and error; so is every
known credential value of the workspace (rf.logsetup.KNOWN: the span batch's
JSON text is searched for them before it is queued).

An execution's spans are kept in memory while it runs and queued to the
batching writer when it ends: recording never makes an execution wait for
the disk.

**Deferred host calls.** A host round trip costs far more than appending to
a list, so the worker does not send calls whose answer agent code does not
wait for (finished custom spans, memory writes, session appends). It keeps
them, with the time and the open custom span of each, and sends them along
with the next host call it has to make (parameter ``_rf_ops``), or, when
the handler returns, inside its ``done`` message (``"ops"``; a large
remainder goes in one ``trace.flush`` call first). :func:`dispatch` replays
them, in order, before serving that call. Finished custom spans travel
apart from the calls, already in stored form (see :meth:`ExecutionTrace.add_spans`
and rf.services.span_rows). ``trace.start``/``trace.end``
also exist as plain host methods (a span stack kept by the host) for code
that calls ``ctx.call_host`` itself.
"""

from __future__ import annotations

import datetime as _dt
import json
import operator
import random
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rf.errors import NotFound, RfError, UsageError
from rf.evals.tape import BODY_MAX
from rf.ids import datetime_of_ns, iso
from rf.jsonfast import dumps_lenient
from rf.logsetup import KNOWN, REDACTED
from rf.models import Execution, Span, Trace, TraceSummary, check_env
from rf.services.base import ReleaseReads, ServiceContext
from rf.services.host import HostCall, HostTable, host_method

if TYPE_CHECKING:
    from rf.store import Store
    from rf.store.traces import SpanRow

#: Parameters the worker adds to a host call (see the module docstring).
OPS_PARAM = "_rf_ops"
SPANS_PARAM = "_rf_spans"
PARENT_PARAM = "_rf_parent"
#: Host methods the worker may defer (their answers are not needed).
DEFERRABLE = frozenset({"trace.span", "trace.start", "trace.end", "memory.set", "memory.delete", "session.append"})
#: Method prefix → span kind.
KINDS = {
    "prompts": "prompt", "llm": "llm", "connectors": "connector", "memory": "memory", "session": "session",
    "kb": "kb", "data": "data", "trace": "custom", "agents": "agent",
}
TRACE_MODES = ("full", "standard", "minimal")
#: Host calls whose request and response a replay needs (rf.evals.tape): standard mode keeps
#: their bodies up to BODY_MAX characters each, not ``trace_max_chars``.
BODY_METHODS = frozenset({"connectors.call", "llm.chat"})
DEFAULT_MAX_CHARS = 2000
_SPAN_ID = re.compile(r"[0-9a-f]{16}")
_NAME_MAX = 200
_ERROR_MAX = 2000
#: Spans of an execution start after its id was made and end before its
#: record is written; this margin absorbs clock steps.
_MARGIN_NS = 60 * 1_000_000_000
#: The shortest wait for a worker that gets a ``queue.wait`` span (100 ms).
QUEUE_WAIT_SPAN_NS = 100_000_000
_B32 = {c: i for i, c in enumerate("0123456789abcdefghjkmnpqrstvwxyz")}


#: Span and trace ids need to be unique, not secret: no system call per span.
_random = random.Random()
_getrandbits = _random.getrandbits
#: 16 hex digits: %-formatting is ~3x faster than f"{n:016x}" (a span id per span).
_hex16 = "%016x".__mod__
#: Span attributes as JSON (anything JSON cannot hold becomes its repr()).
_encode = dumps_lenient


def _new_span_id() -> str:
    return _hex16(_random.getrandbits(64))


_span_rows_module: Any = None


def _span_rows() -> Any:
    """rf.services.span_rows, imported on first use (it imports msgspec)."""
    global _span_rows_module
    if _span_rows_module is None:
        from rf.services import span_rows

        _span_rows_module = span_rows
    return _span_rows_module


def _hex_ids(text: str) -> bool:
    """Only lowercase hex digits (span ids run together: one check for a whole batch)."""
    try:
        return len(bytes.fromhex(text)) * 2 == len(text) and text == text.lower()  # fromhex skips spaces
    except ValueError:
        return False


def describe_error(exc: BaseException) -> str:
    """One line for a span's error."""
    text = exc.message if isinstance(exc, RfError) else f"{type(exc).__name__}: {exc}"
    return text[:_ERROR_MAX]


class _Open:
    """A custom span that has started but not ended."""

    __slots__ = ("attributes", "name", "parent", "span_id", "start_ns")

    def __init__(self, span_id: str, parent: str, name: str, start_ns: int, attributes: dict[str, Any]) -> None:
        self.span_id = span_id
        self.parent = parent
        self.name = name
        self.start_ns = start_ns
        self.attributes = attributes


class ExecutionTrace:
    """The trace of one running execution; lives in ``call.state["trace"]``.

    Only the thread running the execution touches it: the worker sends one
    host call at a time, and the pool serves them in the thread that called
    :meth:`WorkerPool.run`.
    """

    def __init__(self, store: Store, call: HostCall, mode: str = "standard",
                 max_chars: int = DEFAULT_MAX_CHARS, start_ns: int | None = None) -> None:
        self.store = store
        self.call = call
        self.mode = mode if mode in TRACE_MODES else "standard"
        self.max_chars = max_chars
        ids = "%048x".__mod__(_random.getrandbits(192))
        self.trace_id, self.root_id = ids[:32], ids[32:]
        self.start_ns = start_ns or time.time_ns()
        self.stack: list[_Open] = []  #: open custom spans (trace.start/trace.end), innermost last
        self.rows: list[list[Any]] = []  #: finished child spans, queued as one row when the execution ends
        #: custom spans the worker sent ready to store (see add_spans): JSON texts of rows without
        #: their brackets, how many rows, and their earliest start and latest end
        self.raw_spans: list[str] = []
        self.raw_count = 0
        self.raw_start = 0
        self.raw_end = 0
        self.child_errors = 0
        #: when a worker started the run (``on_start``; 0 until then): the end of its wait for a
        #: worker (``queued_ms``) and the start of its ``duration_ms``
        self.run_ns = 0
        #: its ``running`` marker (see rf.store.executions.RunningMarkers), and the input it shows
        self.marked = 0
        self.input: Any = None

    @classmethod
    def begin(cls, store: Store, call: HostCall, mode: str = "standard",
              max_chars: int = DEFAULT_MAX_CHARS, start_ns: int | None = None) -> ExecutionTrace:
        """Open the root span of ``call``'s execution (timing starts at ``start_ns``, default now)."""
        trace = cls(store, call, mode, max_chars, start_ns)
        call.state["trace"] = trace
        return trace

    # ------------------------------------------------------------ attributes
    def _fit(self, value: Any) -> Any:
        """A value as a standard-mode span keeps it: as it is, or, if its JSON is longer
        than ``max_chars``, the first ``max_chars`` characters of it (of the text itself for
        a string) and how many more there were."""
        text = value if isinstance(value, str) else _encode(value)
        if len(text) <= self.max_chars:
            return value
        return f"{text[: self.max_chars]}… [{len(text) - self.max_chars} more characters]"

    def _body(self, value: Any, attributes: dict[str, Any]) -> Any:
        """A connector or LLM request/response body in standard mode: kept whole up to
        :data:`BODY_MAX` characters of JSON (or ``max_chars``, if larger), so that a replay can
        answer from it; a longer one is cut like any attribute and the span marked
        ``body_truncated`` (that call cannot be replayed)."""
        if value is None or isinstance(value, bool | int | float):
            return value
        limit = max(self.max_chars, BODY_MAX)
        text = value if isinstance(value, str) else _encode(value)
        if len(text) <= limit:
            return value
        attributes["body_truncated"] = True
        return f"{text[:limit]}… [{len(text) - limit} more characters]"

    def _attribute(self, value: Any) -> Any:
        """A custom or annotated attribute in standard mode."""
        if value is None or isinstance(value, bool | int | float):
            return value
        return self._fit(value)

    def _scrub(self, value: Any) -> Any:
        """``value`` with every registered secret replaced (strings, lists and dicts walked)."""
        secrets: set[str] | None = self.call.state.get("secrets")
        if not secrets:
            return value
        return _scrub(value, _secret_forms(secrets))

    def _io(self, attributes: dict[str, Any], inputs: Any, output: Any, has_output: bool) -> None:
        """Inputs and outputs are kept as JSON values (fitted to the mode when the row is made)."""
        if self.mode == "minimal":
            return
        attributes["input"] = inputs
        if has_output:
            attributes["output"] = output

    def _root(self, *, end_ns: int, status: str, error: str | None, attributes: dict[str, Any]) -> str:
        """The root span as stored in the execution's row: JSON ``[trace_id, span_id, start_ns,
        end_ns, status, error, attributes]`` (child spans are kept by :meth:`_child`)."""
        if self.call.state.get("secrets"):
            error = self._scrub(error)
            attributes = self._scrub(attributes)
        root = [self.trace_id, self.root_id, self.start_ns, end_ns, status, error, attributes]
        encoded = _encode(root)
        # Standard mode: when the whole is short, so is each part (one encoding in the common case).
        if self.mode == "standard" and len(encoded) > self.max_chars and (
                "input" in attributes or "output" in attributes):
            root[6] = {k: (self._fit(v) if k in ("input", "output") else v) for k, v in attributes.items()}
            encoded = _encode(root)
        return encoded

    def _child(self, span_id: str, parent: str, kind: str, name: str, start_ns: int, end_ns: int, status: str,
               error: str | None, attributes: dict[str, Any]) -> None:
        """Keep a finished child span (fields in ``rf.store.traces.BATCH_FIELDS`` order); the
        execution's child spans are written as one row when it ends."""
        if self.call.state.get("secrets"):
            name = self._scrub(name)
            error = self._scrub(error)
            attributes = self._scrub(attributes)
        self.rows.append([span_id, parent, kind, name, start_ns, end_ns, status, error, attributes])

    def started(self, deadline: float) -> None:
        """The pool's ``on_start``: a worker started the run (it times out at ``deadline``)."""
        self.run_ns = time.time_ns()
        self.call.start(deadline)

    def marker_row(self) -> tuple[Any, ...]:
        """The execution as a ``running_executions`` row (rf.store.executions), up to
        ``run_started_at`` (None while it waits for a worker); known credential values are
        redacted from its input, as they are from its final row."""
        call = self.call
        text = None if self.input is None else _encode(self.input)
        if text is not None and KNOWN.active:
            KNOWN.load()
            text = KNOWN.json_text(text)
        return (call.execution_id, call.env, call.agent, call.commit, call.source, call.session_id, text,
                datetime_of_ns(self.start_ns), datetime_of_ns(self.run_ns) if self.run_ns else None)

    def queue_wait(self, start_ns: int, end_ns: int) -> None:
        """A ``runtime`` span for the wait for a free worker (every worker of the agent was busy),
        when it lasted :data:`QUEUE_WAIT_SPAN_NS` or more: why the execution's ``queued_ms`` is
        long. Shorter waits (a busy server's usual few milliseconds) are in ``queued_ms`` only:
        a span would cost an untraced execution a second row."""
        if end_ns - start_ns < QUEUE_WAIT_SPAN_NS:
            return
        self._child(_new_span_id(), self.root_id, "runtime", "queue.wait", start_ns, max(end_ns, start_ns), "ok",
                    None, {})

    def worker_start(self, start_ns: int, end_ns: int, ok: bool, pid: int | None) -> None:
        """A ``runtime`` span for the wait while a new worker started and imported the agent
        (a cold start): why an execution's trace can be longer than its run."""
        attributes = {"worker_pid": pid} if pid is not None and self.mode != "minimal" else {}
        self._child(_new_span_id(), self.root_id, "runtime", "worker.start", start_ns, max(end_ns, start_ns),
                    "ok" if ok else "error", None if ok else "the worker could not start the agent", attributes)

    def _parent(self, parent: Any) -> str:
        if isinstance(parent, str) and parent:
            return parent
        return self.stack[-1].span_id if self.stack else self.root_id

    # ------------------------------------------------------------ host-call spans
    def host_call(self, method: str, params: dict[str, Any], fn: Callable[[], Any], parent: Any = None,
                  at: int | None = None) -> Any:
        """Run one host call inside its span (``at``: the time a deferred call was made)."""
        state = self.call.state
        state.pop("span_attributes", None)
        start = at if at is not None else time.time_ns()
        try:
            result = fn()
        except BaseException as exc:
            self.child_errors += 1
            self._host_span(method, params, None, False, start, at, parent, "error", describe_error(exc))
            raise
        # A deferred call's answer went nowhere: keep only its input.
        self._host_span(method, params, result, at is None, start, at, parent, "ok", None)
        return result

    def _host_span(self, method: str, params: dict[str, Any], result: Any, has_output: bool, start: int,
                   at: int | None, parent: Any, status: str, error: str | None) -> None:
        end = at if at is not None else time.time_ns()
        extra = self.call.state.pop("span_attributes", None)
        attributes: dict[str, Any] = {}
        if extra and self.mode == "full":
            attributes.update(extra)
        elif extra and self.mode == "standard":  # e.g. an LLM call's messages: truncated like inputs
            attributes.update({k: self._attribute(v) for k, v in extra.items()})
        if self.mode == "full":
            attributes["input"] = params
            if has_output:
                attributes["output"] = result
        elif self.mode == "standard":
            if method in BODY_METHODS:  # what a replay answers from: whole bodies, up to BODY_MAX each
                attributes["input"] = self._body(params, attributes)
                if has_output:
                    attributes["output"] = self._body(result, attributes)
            else:
                attributes["input"] = self._attribute(params)
                if has_output:
                    attributes["output"] = self._attribute(result)
        kind = KINDS.get(method.split(".", 1)[0], "custom")
        self._child(_new_span_id(), self._parent(parent), kind, method, start, end, status, error, attributes)

    # ------------------------------------------------------------ custom spans
    def add_spans(self, text: Any) -> None:
        """Custom spans a worker sent as one JSON text of rows (see rf.services.span_rows).

        Checked by one typed decode. In the common case (no secrets to redact,
        every span's parent set, attributes short enough for the mode, no open
        ``trace.start`` span to nest them in) the text is stored as it came;
        otherwise each span is recorded like a ``trace.span`` call. A UsageError
        (nothing recorded) if the text is not valid span rows.
        """
        if not isinstance(text, str):
            raise UsageError(f"{SPANS_PARAM} must be a JSON text")
        span_rows = _span_rows()
        try:
            spans = span_rows.decode_rows(text)
        except span_rows.Invalid as exc:
            raise UsageError(f"malformed custom spans from the worker: {exc}") from None
        if not spans:
            return
        # Checked a column at a time (each a C loop), not a span at a time.
        ids, parents, _, _, starts, ends, statuses, _, attributes = zip(*spans, strict=True)
        top_level = None in parents
        if not _hex_ids("".join(ids) + "".join(p for p in parents if p is not None) if top_level
                        else "".join(ids) + "".join(parents)):  # each is 16 characters long (span_rows.SpanId)
            raise UsageError("malformed custom spans from the worker: span ids must be 16 lowercase hex digits")
        self.child_errors += statuses.count("error")
        text = text.strip()
        keep = (not top_level and not self.stack and not self.call.state.get("secrets") and text[0] == "["
                and text[-1] == "]" and not any(map(operator.gt, starts, ends))
                # standard mode: no value longer than it keeps (surely not if the whole text is shorter)
                and (self.mode == "full" or (self.mode == "standard" and (
                    len(text) <= self.max_chars or all(self._standard(a) is a for a in attributes)))))
        if keep:
            self.raw_spans.append(text[1:-1])
            start, end = min(starts), max(ends)
            if not self.raw_count or start < self.raw_start:
                self.raw_start = start
            if end > self.raw_end:
                self.raw_end = end
            self.raw_count += len(spans)
            return
        for span_id, parent, _, name, start_ns, end_ns, status, error, attrs in spans:
            # The general way: fill in parents, fit attributes to the mode, redact.
            if parent is None or (parent == self.root_id and self.stack):
                parent = self.stack[-1].span_id if self.stack else self.root_id
            self._end(_Open(span_id, parent, name, start_ns, attrs if self.mode != "minimal" else {}), end_ns,
                      status, error)

    def record_span(self, name: str, span_id: str, parent: Any, start_ns: int, end_ns: int, status: str,
                    error: str | None, attributes: dict[str, Any] | None) -> None:
        """A finished custom span (sent whole by ``ctx.trace.span`` when its block ends)."""
        if status == "error":
            self.child_errors += 1
        span = _Open(span_id, self._parent(parent), name, start_ns, dict(attributes or {}) if self.mode != "minimal"
                     else {})
        self._end(span, end_ns, status, error)

    def start_span(self, name: str, attributes: dict[str, Any] | None, span_id: str | None, parent: Any,
                   at: int | None) -> str:
        span_id = span_id or _new_span_id()
        attrs = dict(attributes or {}) if self.mode != "minimal" else {}
        self.stack.append(_Open(span_id, self._parent(parent), name, at or time.time_ns(), attrs))
        return span_id

    def end_span(self, span_id: str | None, status: str, error: str | None, attributes: dict[str, Any] | None,
                 at: int | None) -> None:
        index = len(self.stack) - 1
        if span_id is not None:
            while index >= 0 and self.stack[index].span_id != span_id:
                index -= 1
        if index < 0:
            raise UsageError(f"trace.end: span {span_id or ''} is not open",
                             'open it first: with ctx.trace.span("name"): ...')
        end = at or time.time_ns()
        # Spans opened inside this one and never ended end with it.
        for inner in self.stack[index + 1:]:
            self._end(inner, end, "error", "span was not ended before its parent")
        span = self.stack[index]
        del self.stack[index:]
        if attributes and self.mode != "minimal":
            span.attributes.update(attributes)
        if status == "error":
            self.child_errors += 1
        self._end(span, end, "error" if status == "error" else "ok", error)

    def _end(self, span: _Open, end_ns: int, status: str, error: str | None) -> None:
        attributes = span.attributes
        if self.mode == "standard" and attributes:
            attributes = self._standard(attributes)
        self._child(span.span_id, span.parent, "custom", span.name, span.start_ns, max(end_ns, span.start_ns),
                    status, error, attributes)

    def _standard(self, attributes: dict[str, Any]) -> dict[str, Any]:
        """Custom attributes as standard mode keeps them (no copy when all are short scalars)."""
        limit = self.max_chars
        for value in attributes.values():
            kind = type(value)
            if not (kind is int or kind is bool or kind is float or value is None
                    or (kind is str and len(value) <= limit)):
                return {k: self._attribute(v) for k, v in attributes.items()}
        return attributes

    # ------------------------------------------------------------ the root
    def finish(self, execution: Execution, end_ns: int | None = None) -> str:
        """Close open custom spans and the root span (at ``end_ns``, default now); scrub
        secrets from the execution record. Queues the child spans; returns the root span
        for the execution's own row (its layout: ``rf.store.traces._root_row``)."""
        end = end_ns or time.time_ns()
        while self.stack:
            self._end(self.stack.pop(), end, "error", "span was not ended (the execution ended first)")
        secrets: set[str] | None = self.call.state.get("secrets")
        if secrets:
            forms = _secret_forms(secrets)
            execution.logs = _scrub(execution.logs, forms)
            execution.error = _scrub(execution.error, forms)
            execution.traceback = _scrub(execution.traceback, forms)
        attributes: dict[str, Any] = {"commit": execution.commit, "source": execution.source}
        if execution.session_id:
            attributes["session_id"] = execution.session_id
        if execution.parent_id:  # called by another agent (ctx.agents.invoke): same trace id as its caller
            attributes["parent_execution_id"] = execution.parent_id
        if execution.release_id:  # production: the release it ran, and its arm while a canary runs
            attributes["release_id"] = execution.release_id
        if execution.arm:
            attributes["arm"] = execution.arm
        if execution.error_type:
            attributes["error_type"] = execution.error_type
        if self.child_errors:
            attributes["child_errors"] = self.child_errors
        # What host methods summed over the execution (e.g. llm.tokens.* from rf.services.providers)
        attributes.update(self.call.state.get("root_attributes") or {})
        self._io(attributes, execution.input, execution.output, execution.status == "succeeded")
        ok = execution.status == "succeeded"
        root = self._root(end_ns=max(end, self.start_ns), status="ok" if ok else "error",
                          error=None if ok else (execution.error or "failed"), attributes=attributes)
        rows, self.rows = self.rows, []
        raw, self.raw_spans = self.raw_spans, []
        if rows or raw:
            call = self.call
            starts = [r[4] for r in rows]
            ends = [r[5] for r in rows]
            if raw:  # spans the worker sent ready to store: spliced in as they came
                starts.append(self.raw_start)
                ends.append(self.raw_end)
                text = "[" + ",".join(([_encode(rows)[1:-1]] if rows else []) + raw) + "]"
            else:
                text = _encode(rows)
            if KNOWN.active:  # known credential values (rf.logsetup), whichever span holds them
                text = KNOWN.json_text(text)
            self.store.queue_span_batch(call.env, self.trace_id, call.execution_id, call.agent, min(starts),
                                        max(ends), len(rows) + self.raw_count, text)
        return root


def redacted(call: HostCall, value: Any) -> Any:
    """*value* as a span would keep it: every secret the execution registered and every known
    credential value (rf.logsetup.KNOWN) replaced by ``[REDACTED]`` (for what is stored
    outside the trace, e.g. the connector answers ``rf eval --record`` writes to a file)."""
    secrets: set[str] | None = call.state.get("secrets")
    if secrets:
        value = _scrub(value, _secret_forms(secrets))
    if KNOWN.active:
        KNOWN.load()
        text = _encode(value)
        clean = KNOWN.json_text(text)
        if clean != text:
            value = json.loads(clean)
    return value


def _secret_forms(secrets: set[str]) -> list[str]:
    """Each secret as it is and as it appears inside JSON text; longest first."""
    forms: set[str] = set()
    for secret in secrets:
        if secret:
            forms.add(secret)
            escaped = json.dumps(secret, ensure_ascii=False)[1:-1]
            forms.add(escaped)
    return sorted(forms, key=len, reverse=True)


def _scrub(value: Any, forms: list[str]) -> Any:
    if isinstance(value, str):
        for form in forms:
            if form in value:
                value = value.replace(form, REDACTED)
        return value
    if isinstance(value, dict):
        return {_scrub(k, forms): _scrub(v, forms) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v, forms) for v in value]
    return value


# ---------------------------------------------------------------- dispatch


def dispatch(table: HostTable, call: HostCall, method: str, params: dict[str, Any]) -> Any:
    """Serve one host call: replay the calls deferred before it, then run it in its span."""
    ops = params.pop(OPS_PARAM, None)
    spans = params.pop(SPANS_PARAM, None)
    parent = params.pop(PARENT_PARAM, None)
    if ops is not None:
        _replay(table, call, ops)
    if spans is not None:
        _add_spans(call, spans)
    return _serve(table, call, method, params, parent, None)


def _serve(table: HostTable, call: HostCall, method: str, params: dict[str, Any],
           parent: Any, at: int | None) -> Any:
    fn = table.get(method)
    if fn is None:
        raise NotFound(f"unknown host method {method!r}", "this rf version does not offer it to agents")
    trace: ExecutionTrace | None = call.state.get("trace")
    if method.startswith("trace."):
        if method in ("trace.span", "trace.start", "trace.end"):
            params = {**params, "at": at}
            if method != "trace.end":
                params["parent"] = parent
        return fn(call, **params)
    if trace is None:
        return fn(call, **params)
    return trace.host_call(method, params, lambda: fn(call, **params), parent, at)


#: Deferred host calls replayed without the general dispatch when they are plain
#: (filled in by the modules that serve them, e.g. rf.services.sessions): each
#: takes ``(call, params)``, does what its host method does, and returns an
#: upper bound of the length of the params' JSON (so the span keeps them as its
#: input without encoding them again). Anything it raises sends the call down
#: the general path, which reports the error in the call's span.
FAST_DEFERRED: dict[str, Callable[[HostCall, dict[str, Any]], int]] = {}


def replay_final(table: HostTable, call: HostCall, ops: Any, spans: Any = None) -> None:
    """Replay the deferred calls and record the custom spans a worker sent with its result;
    their errors are in ``call.state["deferred_errors"]`` (which fails the execution), never raised."""
    if ops is not None:
        if not isinstance(ops, list):
            call.state.setdefault("deferred_errors", []).append("the worker sent malformed deferred ctx calls")
        else:
            try:
                _replay(table, call, ops)
            except RfError:
                pass
    if spans is not None:
        try:
            _add_spans(call, spans)
        except RfError as exc:
            call.state.setdefault("deferred_errors", []).append(exc.message)


def _add_spans(call: HostCall, spans: Any) -> None:
    trace: ExecutionTrace | None = call.state.get("trace")
    if trace is None:  # not traced: checked all the same
        span_rows = _span_rows()
        try:
            span_rows.decode_rows(spans)
        except (TypeError, *span_rows.Invalid) as exc:
            raise UsageError(f"malformed custom spans from the worker: {exc}") from None
        return
    trace.add_spans(spans)


def _replay(table: HostTable, call: HostCall, ops: Any) -> None:
    """Run deferred calls in order. A failure fails the execution (the agent went on without knowing)."""
    if not isinstance(ops, list):
        raise UsageError(f"{OPS_PARAM} must be a list")
    first: RfError | None = None
    trace: ExecutionTrace | None = call.state.get("trace")
    # Plain memory writes and session appends are recorded inline (FAST_DEFERRED);
    # anything else, or anything unusual about one, takes the general path below.
    quick = trace is not None and not call.state.get("secrets")
    if trace is not None:
        rows, mode, stack, root, max_chars = trace.rows, trace.mode, trace.stack, trace.root_id, trace.max_chars
    for op in ops:
        if quick and type(op) is list and len(op) == 4:
            method, p, at, parent = op
            fast = FAST_DEFERRED.get(method) if type(p) is dict and type(at) is int else None
            if fast is not None:
                try:
                    size = fast(call, p)
                except Exception:  # noqa: BLE001 - the general path below reports it
                    pass
                else:
                    if mode == "minimal":
                        attrs = {}
                    elif mode == "full" or size <= max_chars:
                        attrs = {"input": p}
                    else:
                        attrs = {"input": trace._attribute(p)}  # type: ignore[union-attr]
                    if not (type(parent) is str and parent):
                        parent = stack[-1].span_id if stack else root
                    rows.append([_hex16(_getrandbits(64)), parent, KINDS[method.split(".", 1)[0]], method, at,
                                 at, "ok", None, attrs])
                    continue
        try:
            if not (isinstance(op, list) and len(op) == 4 and op[0] in DEFERRABLE and isinstance(op[1], dict)
                    and (op[2] is None or isinstance(op[2], int))):
                raise UsageError(f"malformed deferred host call {str(op)[:100]}")
            if op[0] == "trace.span" and trace is not None:
                _record(trace, op[1], op[3], op[2])
            else:
                _serve(table, call, op[0], dict(op[1]), op[3], op[2])
        except RfError as exc:
            said = exc.message if exc.message.startswith("ctx.") else \
                f"ctx {op[0] if isinstance(op, list) else '?'}: {exc.message}"
            call.state.setdefault("deferred_errors", []).append(said)
            first = first or exc
        except Exception as exc:  # noqa: BLE001 - becomes the execution's error, never a lost write
            call.state.setdefault("deferred_errors", []).append(describe_error(exc))
            first = first or RfError(describe_error(exc))
    if first is not None:
        raise first


def _check_span(p: dict[str, Any]) -> None:
    name = p.get("name")
    if not isinstance(name, str) or not (1 <= len(name) <= _NAME_MAX):
        raise UsageError(f"ctx.trace.span: the name must be a string of 1 to {_NAME_MAX} characters")
    span_id = p.get("span_id")
    if not (isinstance(span_id, str) and _SPAN_ID.fullmatch(span_id)):
        raise UsageError("trace.span: span_id must be 16 lowercase hex digits")
    start = p.get("start")
    if isinstance(start, bool) or not isinstance(start, int):
        raise UsageError("trace.span: start must be a time in Unix nanoseconds")
    attributes = p.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise UsageError("ctx.trace.span: attributes must be keyword arguments")


def _record(trace: ExecutionTrace, p: dict[str, Any], parent: Any, at: Any) -> None:
    """A finished custom span (``trace.span``), checked, into the execution's trace."""
    _check_span(p)
    end = at if isinstance(at, int) and not isinstance(at, bool) else time.time_ns()
    error = p.get("error")
    trace.record_span(p["name"], p["span_id"], parent, p["start"], end,
                      "error" if p.get("status") == "error" else "ok",
                      str(error)[:_ERROR_MAX] if error is not None else None, p.get("attributes"))


# ---------------------------------------------------------------- time filters

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(since: Any) -> int | None:
    """``--since``: ``30m``, ``2h``, ``7d``, ``1w``, or an ISO date/time (UTC) → Unix ns."""
    if since is None or since == "":
        return None
    text = str(since).strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhdw])", text)
    if match:
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
        return time.time_ns() - int(seconds * 1e9)
    try:
        moment = _dt.datetime.fromisoformat(text.rstrip("Z"))
    except ValueError:
        raise UsageError(f"cannot read --since {text!r}",
                         "use a duration such as 30m, 2h, 7d, or a UTC date/time such as 2026-11-26T09:00") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.UTC).replace(tzinfo=None)
    return int(moment.replace(tzinfo=_dt.UTC).timestamp() * 1e9)


def id_time_ns(execution_id: str) -> int | None:
    """The creation time encoded in an execution id (see :mod:`rf.ids`), or None."""
    if not execution_id.startswith("ex_") or len(execution_id) < 12:
        return None
    ms = 0
    for char in execution_id[3:12]:
        digit = _B32.get(char)
        if digit is None:
            return None
        ms = ms * 32 + digit
    return ms * 1_000_000


def _iso_ns(ns: int) -> str:
    return iso(_dt.datetime.fromtimestamp(ns / 1e9, _dt.UTC).replace(tzinfo=None))


def span_of(row: SpanRow) -> Span:
    return Span(span_id=row[2], trace_id=row[1], parent_id=row[3], execution_id=row[4], env=row[0], agent=row[5],
                kind=row[6], name=row[7], start_ns=int(row[8]), end_ns=int(row[9]), status=row[10], error=row[11],
                attributes=json.loads(row[12]) if row[12] else {})


def _summary(row: SpanRow) -> TraceSummary:
    summary = TraceSummary(execution_id=row[4], trace_id=row[1], env=row[0], agent=row[5], status=row[10],
                           started_at=_iso_ns(int(row[8])),
                           duration_ms=round((int(row[9]) - int(row[8])) / 1e6, 3), error=row[11])
    attributes = row[12]
    if row[0] == "production" and isinstance(attributes, str) and '"release_id"' in attributes:
        found = json.loads(attributes)  # (a production root span names its release and arm)
        summary.release_id, summary.arm = found.get("release_id"), found.get("arm")
    return summary


def _text_param(value: Any) -> Any:
    """Undo the HTTP API's guess that a numeric-looking query value is a number (agent "007")."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return value


def _limit(limit: Any, most: int) -> int:
    from rf.config import check_limit  # the one check and message of every list's limit

    return check_limit(limit, most)


class TracesService:
    """Traces of executions: reading and exporting them, and ``ctx.trace`` for agents."""

    def __init__(self, ctx: ServiceContext, releases: ReleaseReads) -> None:
        self.store = ctx.store
        self.releases = releases

    # ------------------------------------------------------------ reading
    def list_traces(self, env: str = "staging", agent: str | None = None, since: str | None = None,
                    limit: int = 50, release: str | None = None, arm: str | None = None) -> list[TraceSummary]:
        """Traces (root spans) of one environment, newest first (``release``, ``arm``: production's
        of that release / canary arm only)."""
        from rf.services.canary import arm_filters

        check_env(env)
        limit = _limit(limit, 10_000)
        since_ns = parse_since(since)
        agent = _text_param(agent)
        release_id, arm = arm_filters(self.releases, _text_param(release), arm)
        only: dict[str, Any] = {"release_id": release_id, "arm": arm} if release_id is not None or arm is not None else {}
        if since_ns is not None:
            rows = self.store.root_spans(env, agent=agent, since_ns=since_ns, limit=limit, **only)
        else:
            rows = self._recent_roots(env, agent, limit, **only)
        return [_summary(r) for r in rows]

    def _recent_roots(self, env: str, agent: str | None, limit: int, **only: Any) -> list[SpanRow]:
        """The newest root spans, looking back in growing windows.

        Each window is a time-bounded scan that skips the row groups outside
        it, so listing the latest traces stays fast however many are stored.
        """
        now = time.time_ns() + _MARGIN_NS
        window = 3600 * 1_000_000_000
        until: int | None = None
        found: list[SpanRow] = []
        for _ in range(7):  # 1 h, 8 h, 64 h, 21 d, 170 d, 3.7 y, 30 y
            since = now - window
            found += self.store.root_spans(env, agent=agent, since_ns=since, until_ns=until,
                                           limit=limit - len(found), **only)
            if len(found) >= limit:
                return found
            until = since
            window *= 8
        return found + self.store.root_spans(env, agent=agent, until_ns=until, limit=limit - len(found), **only)

    def get_trace(self, execution_id: str, env: str | None = None) -> Trace:
        """The span tree of one execution (``env`` given: another environment's is 'not found')."""
        if env is not None:
            check_env(env)
        if not isinstance(execution_id, str) or not execution_id:
            raise UsageError("give an execution id", "list them: rf traces list --env ENV")
        root = self._find_root(execution_id)
        if root is None and len(execution_id) >= 4:
            matches = self.store.find_executions(execution_id)
            if len(matches) > 1:
                raise UsageError(f"execution id prefix {execution_id!r} is ambiguous", "type more of the id")
            if matches:
                execution_id = matches[0]
                root = self._find_root(execution_id)
        if root is None or (env is not None and root[0] != env):
            where = f" in {env}" if env else ""
            raise NotFound(f"no trace for execution {execution_id!r}{where}",
                           "list traces: rf traces list --env ENV")
        rows = self.store.execution_spans(execution_id, int(root[8]) - _MARGIN_NS, int(root[9]) + _MARGIN_NS)
        spans = [span_of(r) for r in rows]
        spans += self._child_spans(spans, {execution_id}, depth=1)
        spans.sort(key=lambda s: (s.parent_id is not None, s.start_ns))
        return Trace(execution_id=execution_id, trace_id=root[1], env=root[0], agent=root[5], status=root[10],
                     spans=spans)

    def _child_spans(self, spans: list[Span], seen: set[str], depth: int) -> list[Span]:
        """The spans of the executions these spans called (``ctx.agents.invoke``), each child's
        root under the caller's call span: one tree across agents (bounded like the calls)."""
        found: list[Span] = []
        if depth > 8:
            return found
        for span in spans:
            child = (span.attributes or {}).get("child_execution_id")
            if not isinstance(child, str) or child in seen:
                continue
            seen.add(child)
            root = self._find_root(child)
            if root is None:
                continue
            rows = self.store.execution_spans(child, int(root[8]) - _MARGIN_NS, int(root[9]) + _MARGIN_NS)
            child_spans = [span_of(r) for r in rows]
            for c in child_spans:
                if c.parent_id is None:
                    c.parent_id = span.span_id
            found += child_spans + self._child_spans(child_spans, seen, depth + 1)
        return found

    def _find_root(self, execution_id: str) -> SpanRow | None:
        t = id_time_ns(execution_id)
        if t is None or len(execution_id) != 24:
            return None
        return self.store.root_span(execution_id, t - _MARGIN_NS, t + _MARGIN_NS)

    def export_spans(self, env: str = "staging", since: str | None = None, agent: str | None = None,
                     limit: int = 100_000) -> list[Span]:
        """Spans of one environment, oldest first (what ``rf traces export`` sends)."""
        check_env(env)
        limit = _limit(limit, 1_000_000)
        rows = self.store.spans_of(env, agent=_text_param(agent), since_ns=parse_since(since), limit=limit)
        return [span_of(r) for r in rows]

    # ------------------------------------------------------------ agent code (ctx.trace)
    @host_method("trace.start")
    def _host_trace_start(self, call: HostCall, name: Any, attributes: Any = None, span_id: Any = None,
                          parent: Any = None, at: Any = None) -> str:
        """Open a custom span (nested inside the innermost open one)."""
        if not isinstance(name, str) or not (1 <= len(name) <= _NAME_MAX):
            raise UsageError(f"ctx.trace.span: the name must be a string of 1 to {_NAME_MAX} characters")
        if attributes is not None and not isinstance(attributes, dict):
            raise UsageError("ctx.trace.span: attributes must be keyword arguments")
        if span_id is not None and not (isinstance(span_id, str) and _SPAN_ID.fullmatch(span_id)):
            raise UsageError("trace.start: span_id must be 16 lowercase hex digits")
        trace: ExecutionTrace | None = call.state.get("trace")
        if trace is None:
            return span_id or _new_span_id()
        return trace.start_span(name, attributes, span_id, parent, at if isinstance(at, int) else None)

    @host_method("trace.end")
    def _host_trace_end(self, call: HostCall, span_id: Any = None, status: Any = "ok", error: Any = None,
                        attributes: Any = None, at: Any = None) -> None:
        """Close a custom span (the innermost one if no id is given)."""
        if attributes is not None and not isinstance(attributes, dict):
            raise UsageError("trace.end: attributes must be an object")
        trace: ExecutionTrace | None = call.state.get("trace")
        if trace is None:
            return
        trace.end_span(span_id if isinstance(span_id, str) else None, "error" if status == "error" else "ok",
                       str(error)[:_ERROR_MAX] if error is not None else None, attributes,
                       at if isinstance(at, int) else None)

    @host_method("trace.span")
    def _host_trace_span(self, call: HostCall, name: Any = None, span_id: Any = None, start: Any = None,
                         attributes: Any = None, status: Any = "ok", error: Any = None, parent: Any = None,
                         at: Any = None) -> None:
        """Record a finished custom span (``at``: when it ended)."""
        trace: ExecutionTrace | None = call.state.get("trace")
        params = {"name": name, "span_id": span_id, "start": start, "attributes": attributes, "status": status,
                  "error": error}
        if trace is None:
            _check_span(params)
            return
        _record(trace, params, parent, at)

    @host_method("trace.flush")
    def _host_trace_flush(self, call: HostCall) -> None:
        """Nothing itself: the deferred calls it carries are replayed by :func:`dispatch`."""
