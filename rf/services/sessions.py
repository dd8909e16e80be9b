"""Sessions (threads) and memory, per environment.

**Sessions.** A session is ``(environment, agent, id)``; the id is whatever
the caller chooses (1–128 of ``A-Z a-z 0-9 _ . : -``). Invoking with a
session id appends the user's input and the agent's output to that session in
the execution's environment; agent code reads it with
``ctx.session.history()`` and adds to it with ``ctx.session.append()``.

**Memory.** Key → JSON value, one namespace per environment (``staging:``,
``production:``): the environment comes from the execution, never from agent
code, so an agent can narrow its scope (``ctx.memory.scope("user:42")``) but
can never reach the other environment's keys. From outside agent code,
memory can be read in both environments and deleted only in staging
(production is read-only).

**All or nothing per execution.** An execution's session appends and memory
writes are kept aside while it runs (it reads its own writes) and committed
together when it succeeds; a failed execution leaves sessions and memory as
they were. Committing queues the rows to the batching writer, which has them
on disk within milliseconds; every read of sessions or memory flushes the
writer first, so anything read after an execution reported success sees its
writes. (Waiting for the disk in every execution would cost a DuckDB commit,
about 5 ms, per execution; see docs/architecture.md.)
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import threading
import time
from typing import TYPE_CHECKING, Any

from rf.errors import NotFound, PayloadTooLarge, UsageError
from rf.ids import iso, micros_of, parse_iso, utcnow
from rf.jsonfast import dumpb, dumps
from rf.logsetup import KNOWN
from rf.models import (
    MEMORY_MAX_KEY_CHARS,
    MEMORY_MAX_VALUE_BYTES,
    SESSION_ID_PATTERN,
    SESSION_ROLES,
    Execution,
    MemoryChange,
    MemoryItem,
    SessionMessage,
    SessionSummary,
    SessionThread,
    check_env,
)
from rf.services.base import ReleaseReads, ServiceContext
from rf.services.host import HostCall, host_method
from rf.services.traces import FAST_DEFERRED

if TYPE_CHECKING:
    from rf.store import Store
    from rf.store.sessions import MemoryRow

_SESSION_ID = re.compile(SESSION_ID_PATTERN)
#: Encoders made once (json.dumps with options builds a new one per call).
_encode = dumps
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Compact the memory table after this many writes (superseded rows pile up).
COMPACT_EVERY = 10_000
_PREVIEW = 80


_seq_lock = threading.Lock()
_last_seq = 0


def next_seq(count: int = 1) -> int:
    """A strictly increasing number (nanoseconds since the epoch, bumped on ties); with
    ``count``, the first of that many (the others follow it, one apart).

    The process that owns the store is its only writer, so this orders
    session messages and memory writes without asking the database.
    """
    global _last_seq
    with _seq_lock:
        now = time.time_ns()
        first = now if now > _last_seq else _last_seq + 1
        _last_seq = first + count - 1
        return first


def check_session_id(session_id: Any) -> str | None:
    """None, or a valid session id; a UsageError with the rule otherwise."""
    if session_id is None:
        return None
    if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
        shown = session_id if isinstance(session_id, str) else type(session_id).__name__
        raise UsageError(f"invalid session id {str(shown)[:140]!r}",
                         "use 1 to 128 letters, digits and _ . : - (for example chat-42 or user:7:thread-1)")
    return session_id


def check_memory_key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise UsageError("a memory key must be a non-empty string")
    if len(key) > MEMORY_MAX_KEY_CHARS:
        raise UsageError(f"memory key is too long ({len(key)} characters; the limit is {MEMORY_MAX_KEY_CHARS})")
    if _CONTROL.search(key):
        raise UsageError(f"memory key {key[:60]!r} contains control characters")
    return key


def _label(what: str, key: str | None) -> str:
    return f"memory value for {key[:60]!r}" if key is not None else what


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


def dump_json(value: Any, what: str = "", *, key: str | None = None) -> str:
    """``value`` as JSON text within the memory size limit (clear errors otherwise). ``what``
    names it in an error, or ``key``, the memory key it is for (the label is then made
    only if there is an error)."""
    try:
        data = dumpb(value)
    except (TypeError, ValueError) as exc:
        what = _label(what, key)
        raise UsageError(f"{what} is not JSON-serializable: {exc}",
                         "use strings, numbers, booleans, None, lists and dicts with string keys") from None
    size = len(data)
    text = data.decode("utf-8")
    if size > MEMORY_MAX_VALUE_BYTES:
        what = _label(what, key)
        raise PayloadTooLarge(f"{what} is too large ({_kib(size)}; the limit is {_kib(MEMORY_MAX_VALUE_BYTES)})",
                              "keep large data in a data source or knowledge base and store a reference to it")
    return text


def message_content(value: Any, field: str = "message") -> Any:
    """What a session keeps of an input or output: its *field* (``message``, or what the
    agent's ``[session]`` names) if it has one, else all of it.

    So ``ctx.session.history()`` reads like chat messages whether callers send
    ``{"message": "hi"}`` or plain strings. A streamed output of strings is joined.
    """
    if isinstance(value, dict) and field in value:
        return value[field]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return "".join(value)
    return value


def _preview(content_json: str | None) -> str:
    if content_json is None:
        return ""
    try:
        content = json.loads(content_json)
    except ValueError:
        content = content_json
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    text = " ".join(text.split())
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _limit(limit: Any, most: int) -> int:
    from rf.config import check_limit  # the one check and message of every list's limit

    return check_limit(limit, most)


def _text_param(value: Any) -> Any:
    """Undo the HTTP API's guess that a numeric-looking query value is a number."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return str(value)
    return value


# ---------------------------------------------------------------- deferred calls, replayed in bulk
#
# ``ctx.memory.set/delete`` and ``ctx.session.append`` are deferred by the
# worker (rf.runtime.ctx_trace) and replayed by rf.services.traces._replay
# when their batch arrives. These do what the host methods below do, without
# the per-call dispatch, and return an upper bound of the length of their
# parameters' JSON, so the replay can keep them whole as the span's input
# without encoding them again. Anything they refuse raises, and the replay
# then takes the general path (which reports the error).


def keep_memory_write(call: HostCall, key: Any, value: Any, *, delete: bool = False) -> str | None:
    """Keep a memory write (or deletion) aside until the execution ends; the value's JSON text."""
    key = check_memory_key(key)
    text = None if delete else dump_json(value, key=key)
    pending = call.state.setdefault("memory", {})
    pending.pop(key, None)  # keep the order of the last writes
    pending[key] = text
    return text


def keep_session_message(call: HostCall, role: Any, content: Any) -> str:
    """Keep a message for this execution's session until it ends; the content's JSON text."""
    if call.session_id is None:
        raise UsageError("ctx.session.append: this execution has no session",
                         "invoke with a session id: rf invoke AGENT --session ID, or {\"session_id\": ...}")
    if role not in SESSION_ROLES:
        raise UsageError(f"ctx.session.append: role must be one of {', '.join(SESSION_ROLES)}, not {role!r}")
    text = dump_json(content, "session message content")
    call.state.setdefault("session", []).append((role, text, time.time_ns() // 1000))  # Unix µs
    return text


def _deferred_memory_set(call: HostCall, params: dict[str, Any]) -> int:
    if len(params) != 2:
        raise UsageError("memory.set takes key and value")
    key = params["key"]
    text = keep_memory_write(call, key, params["value"])
    return len(text or "") + 2 * len(key) + 20  # {"key":K,"value":V}; K may have escaped characters


def _deferred_memory_delete(call: HostCall, params: dict[str, Any]) -> int:
    if len(params) != 1:
        raise UsageError("memory.delete takes key")
    key = params["key"]
    keep_memory_write(call, key, None, delete=True)
    return 2 * len(key) + 12


def _deferred_session_append(call: HostCall, params: dict[str, Any]) -> int:
    if len(params) != 2:
        raise UsageError("session.append takes role and content")
    role = params["role"]
    text = keep_session_message(call, role, params["content"])
    return len(text) + len(role) + 24


FAST_DEFERRED.update({
    "memory.set": _deferred_memory_set,
    "memory.delete": _deferred_memory_delete,
    "session.append": _deferred_session_append,
})


# ---------------------------------------------------------------- end of an execution

_compact_lock = threading.Lock()
_writes_since_compact = 0


def finish_execution(store: Store, call: HostCall, execution: Execution, started: _dt.datetime | None = None,
                     ended: _dt.datetime | None = None) -> None:
    """Commit the execution's session appends and memory writes if it succeeded.

    A deferred host call that failed (the agent went on without knowing)
    fails the execution first, so nothing of it is committed.

    The one place where everything an execution stores is at hand before it is
    queued: known credential values (rf.logsetup.KNOWN) are redacted here, in
    the execution itself (its record, and the answer its caller gets), its
    session messages and its memory writes. With no credential known that is
    one attribute check.
    """
    global _writes_since_compact
    errors: list[str] | None = call.state.get("deferred_errors")
    if errors and execution.status == "succeeded":
        execution.status = "failed"
        execution.error = errors[0] + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else "")
        execution.error_type = "exception"
        execution.output = None
    if KNOWN.active:
        redact_execution(call, execution)
    if execution.status != "succeeded":
        return
    memory: dict[str, str | None] | None = call.state.get("memory")
    if not (execution.session_id or memory):
        return
    ended = ended or utcnow()
    appended = call.state.get("session", ()) if execution.session_id else ()
    has_input = execution.session_id is not None and execution.input is not None
    has_output = execution.session_id is not None and execution.output is not None
    if has_input or has_output:
        input_field, output_field = call.state.get("session_fields") or ("message", "message")
        said = _encode(message_content(execution.input, input_field)) if has_input else None
        answered = _encode(message_content(execution.output, output_field)) if has_output else None
        if appended:
            # The turn's own messages are recorded by rf: an append of the same role and content
            # during the execution (an agent recording the turn itself) is not kept twice.
            appended = [m for m in appended if not ((m[0] == "user" and m[1] == said)
                                                    or (m[0] == "assistant" and m[1] == answered))]
    count = len(appended) + has_input + has_output
    seq = next_seq(count + len(memory or ()))  # one reservation for the turn and the memory writes
    if count:
        # One row for all of the execution's messages: [[role, content, Unix µs], ...].
        started = started or (parse_iso(execution.started_at) if execution.started_at else ended)
        parts: list[str] = []
        if has_input:
            parts.append(f'["user",{said},{micros_of(started)}]')
        parts += [f'["{role}",{content_json},{at}]' for role, content_json, at in appended]  # roles: SESSION_ROLES
        if has_output:
            parts.append(f'["assistant",{answered},{micros_of(ended)}]')
        store.queue_session_turn((execution.env, execution.agent, execution.session_id or "", seq, count,
                                  execution.id, started, ended, "[" + ",".join(parts) + "]"))
        seq += count
    if memory:
        mem_rows: list[MemoryRow] = [
            (execution.env, key, seq + i, value, execution.agent, execution.id, ended)
            for i, (key, value) in enumerate(memory.items())
        ]
        store.queue_memory(mem_rows)
        with _compact_lock:
            _writes_since_compact += len(mem_rows)
            due = _writes_since_compact >= COMPACT_EVERY
            if due:
                _writes_since_compact = 0
        if due:
            threading.Thread(target=_compact, args=(store,), name="rf-memory-compact", daemon=True).start()


def redact_execution(call: HostCall, execution: Execution) -> None:
    """Replace known credential values in the execution (input, output, error, traceback, logs)
    and in the session messages and memory writes it keeps aside. Values are scanned as JSON
    text and rebuilt only when they hold one."""
    KNOWN.load()  # the first execution reads the credentials (later: after one is set or deleted)
    if not KNOWN.forms:
        return
    session: list[tuple[str, str, int]] | None = call.state.get("session")
    memory: dict[str, str | None] | None = call.state.get("memory")
    # The common case, nothing to redact: one search per form over everything at once.
    try:
        parts = [dumps(execution.input), dumps(execution.output)]
    except (TypeError, ValueError):  # not JSON: look at each part below
        parts = [KNOWN.forms[0]]
    parts += [execution.error or "", execution.traceback or "", execution.logs or ""]
    if session:
        parts += [content for _, content, _ in session]
    if memory:
        parts += [f"{key}\x00{value}" for key, value in memory.items()]
    if not KNOWN.found("\x00".join(parts)):
        return
    text = KNOWN.text
    execution.input = _redacted_value(execution.input)
    execution.output = _redacted_value(execution.output)
    if execution.error:
        execution.error = text(execution.error)
    if execution.traceback:
        execution.traceback = text(execution.traceback)
    if execution.logs:
        execution.logs = text(execution.logs)
    if session:
        call.state["session"] = [(role, KNOWN.json_text(content), at) for role, content, at in session]
    if memory:
        call.state["memory"] = {text(key): (KNOWN.json_text(value) if value is not None else None)
                                for key, value in memory.items()}


def _redacted_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return KNOWN.text(value)
    try:
        found = KNOWN.found(dumps(value))
    except (TypeError, ValueError):
        found = True  # not JSON: walk it all the same
    return KNOWN.value(value) if found else value


def _compact(store: Store) -> None:
    import logging

    try:
        store.flush()
        store.compact_memory()
    except Exception as exc:  # noqa: BLE001 - compaction is an optimisation; the next one retries
        logging.getLogger("rf.services.sessions").warning("memory compaction failed: %s", exc)


class SessionsService:
    """Sessions and memory: reading them, and ``ctx.session`` / ``ctx.memory`` for agents."""

    def __init__(self, ctx: ServiceContext, releases: ReleaseReads) -> None:
        self.store = ctx.store
        self.releases = releases

    # ------------------------------------------------------------ sessions
    def list_sessions(self, env: str = "staging", agent: str | None = None, limit: int = 50,
                      release: str | None = None, arm: str | None = None) -> list[SessionSummary]:
        """Sessions of one environment, most recently active first; in production with the release
        and arm of each one's latest execution (``release``, ``arm``: only those)."""
        from rf.services.canary import arm_filters

        check_env(env)
        limit = _limit(limit, 10_000)
        release_id, arm = arm_filters(self.releases, _text_param(release), arm)
        rows = self.store.list_sessions(env, agent=_text_param(agent), limit=limit, release_id=release_id, arm=arm)
        return [SessionSummary(id=r[0], env=env, agent=r[1], messages=int(r[2]), started_at=iso(r[3]),
                               updated_at=iso(r[4]), last_message=_preview(r[5]), release_id=r[6], arm=r[7])
                for r in rows]

    def get_session(self, session_id: str, env: str = "staging", agent: str | None = None) -> SessionThread:
        """One session's messages, oldest first. Without ``agent``, the id must be used by one agent only."""
        check_env(env)
        session_id = check_session_id(_text_param(session_id)) or ""
        agent = _text_param(agent)
        agents = self.store.session_agents(env, session_id)
        if agent is None:
            if len(agents) > 1:
                raise UsageError(f"session {session_id!r} exists for several agents in {env}: {', '.join(agents)}",
                                 "name one: --agent NAME")
            agent = agents[0] if agents else None
        if agent is None or agent not in agents:
            other = "production" if env == "staging" else "staging"
            elsewhere = bool(self.store.session_agents(other, session_id))
            hint = (f"it exists in {other}: rf sessions show {session_id} --env {other}" if elsewhere
                    else f"list them: rf sessions list --env {env}")
            who = f" for agent {agent!r}" if agent is not None else ""
            raise NotFound(f"no session {session_id!r}{who} in {env}", hint)
        rows = self.store.session_messages(env, session_id, agent)
        return SessionThread(id=session_id, env=env, agent=agent, messages=[
            SessionMessage(role=r[1], content=r[2], execution_id=r[3], created_at=iso(r[4])) for r in rows
        ])

    # ------------------------------------------------------------ memory
    def list_memory(self, env: str = "staging", prefix: str = "", limit: int = 1000) -> list[MemoryItem]:
        """Memory keys of one environment (with values), by key."""
        check_env(env)
        prefix = _text_param(prefix) or ""
        if not isinstance(prefix, str):
            raise UsageError("--prefix must be a string")
        limit = _limit(limit, 100_000)
        rows = self.store.memory_items(env, prefix, limit=limit)
        return [MemoryItem(key=r[0], env=env, value=json.loads(r[1]) if r[1] is not None else None, size=int(r[2]),
                           updated_at=iso(r[3]), agent=r[4], execution_id=r[5]) for r in rows]

    def get_memory(self, key: str, env: str = "staging") -> MemoryItem:
        """One memory key of one environment."""
        check_env(env)
        key = check_memory_key(key)
        row = self.store.memory_value(env, key)
        if row is None:
            raise NotFound(f"no memory key {key!r} in {env}", f"list them: rf memory list --env {env}")
        return MemoryItem(key=key, env=env, value=json.loads(row[0]), size=len(row[0].encode("utf-8")),
                          updated_at=iso(row[1]), agent=row[2], execution_id=row[3])

    def delete_memory(self, key: str, env: str = "staging") -> MemoryChange:
        """Delete one key of staging memory (production memory is read-only)."""
        from rf.models import require_staging

        require_staging(env, "delete memory", "production memory changes only through its agents' executions; "
                                              "delete keys in staging: rf memory delete KEY --env staging")
        key = check_memory_key(key)
        deleted = self.store.delete_memory(env, key=key)
        if not deleted:
            raise NotFound(f"no memory key {key!r} in {env}", f"list them: rf memory list --env {env}")
        return MemoryChange(env=env, deleted=len(deleted), keys=deleted)

    def clear_memory(self, env: str = "staging", prefix: str = "") -> MemoryChange:
        """Delete every staging key (under ``prefix``); production memory is read-only."""
        from rf.models import require_staging

        require_staging(env, "clear memory", "production memory changes only through its agents' executions; "
                                             "clear staging memory: rf memory clear --env staging")
        prefix = _text_param(prefix) or ""
        if not isinstance(prefix, str):
            raise UsageError("--prefix must be a string")
        deleted = self.store.delete_memory(env, prefix=prefix)
        return MemoryChange(env=env, deleted=len(deleted), keys=deleted)

    # ------------------------------------------------------------ agent code: ctx.session
    @host_method("session.history")
    def _host_session_history(self, call: HostCall, limit: Any = None) -> list[dict[str, Any]]:
        """This execution's session, oldest first, including what it appended itself."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise UsageError("ctx.session.history: limit must be a whole number ≥ 0")
        tape = call.tape
        if tape is not None and tape.history is not None and call.parent_id is None:
            # a replayed turn: the recorded session before it (not its calls to other agents)
            messages = [dict(m) for m in tape.history]
        elif call.session_id is None or limit == 0:
            return []
        else:
            stored = self.store.session_messages(call.env, call.session_id, call.agent, limit=limit)
            messages = [{"role": r[1], "content": r[2]} for r in stored]
        if limit == 0:
            return []
        messages += [{"role": role, "content": json.loads(content)} for role, content, _ in call.state.get("session", ())]
        return messages[-limit:] if limit is not None else messages

    @host_method("session.append")
    def _host_session_append(self, call: HostCall, role: Any, content: Any) -> None:
        """Add a message to this execution's session (committed when the execution succeeds)."""
        keep_session_message(call, role, content)

    # ------------------------------------------------------------ agent code: ctx.memory
    @host_method("memory.get")
    def _host_memory_get(self, call: HostCall, key: Any) -> dict[str, Any] | None:
        """``{"value": ...}``, or None when the key is absent from this environment's memory."""
        key = check_memory_key(key)
        pending: dict[str, str | None] | None = call.state.get("memory")
        if pending is not None and key in pending:
            text = pending[key]
        else:
            row = self.store.memory_value(call.env, key)
            text = row[0] if row is not None else None
        return None if text is None else {"value": json.loads(text)}

    @host_method("memory.set")
    def _host_memory_set(self, call: HostCall, key: Any, value: Any) -> None:
        keep_memory_write(call, key, value)

    @host_method("memory.delete")
    def _host_memory_delete(self, call: HostCall, key: Any) -> None:
        keep_memory_write(call, key, None, delete=True)

    @host_method("memory.list")
    def _host_memory_list(self, call: HostCall, prefix: Any = "") -> list[str]:
        """Keys under ``prefix`` in this environment's memory, sorted."""
        if not isinstance(prefix, str):
            raise UsageError("ctx.memory.list: prefix must be a string")
        keys = {r[0] for r in self.store.memory_items(call.env, prefix, values=False)}
        for key, text in (call.state.get("memory") or {}).items():
            if key.startswith(prefix):
                if text is None:
                    keys.discard(key)
                else:
                    keys.add(key)
        return sorted(keys)

