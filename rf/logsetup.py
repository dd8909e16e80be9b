"""rf's logging configuration, and the redaction of secrets from what rf writes.

**Known credential values.** :data:`KNOWN` holds the values of the
credentials of every workspace this process serves (the keyring's and
``RF_SECRET_<NAME>`` overrides; loaded by rf.services.credentials on the first
execution and refreshed when a credential is set or deleted). Everything rf
stores about an execution — its record (input, output, error, traceback,
logs), session messages, memory writes, spans — and the answer its caller
gets pass through it (rf.services.sessions.finish_execution, the trace's
span batch), and so does every log record (:class:`RedactFilter`). A value
is replaced by ``[REDACTED]``, the marker traces use. Values shorter than
:data:`MIN_SECRET_CHARS` characters are not redacted: replacing every
``1234`` or ``admin`` in outputs and logs would mangle text far more often
than it would hide a secret (so do not use such credentials).

With no known value :attr:`Redactor.active` is false, and an execution pays
one attribute check for all this.

**Logging.** :func:`configure` (``rf serve``, ``rf ui``) sends rf's loggers
and every library's to one stderr handler with one format, at
``RF_LOG_LEVEL`` (default ``warning``); keeps uvicorn's own handlers (start-up
and error lines are useful); and keeps httpx and httpcore at WARNING whatever
the level, because they log every outbound URL — query-string API keys
included — at INFO and headers at DEBUG. A :class:`RedactFilter` on those
handlers (and a log-record factory, for handlers added later, such as the
dashboard's log file) removes known credential values and query-string
credentials (``?api_key=…``, ``token=``, ``secret=``, ``password=``, …,
``Bearer …``) from every record, exception text included.

**Floods.** A :class:`RepeatFilter` on rf's handler and uvicorn's error-log
handler (not the access log, nor handlers others add) lets through at most
:data:`REPEAT_BURST` records of one cause (logger, level, message template with
its numbers blanked, exception type) per :data:`REPEAT_INTERVAL_S` seconds;
the next record of that cause after the interval carries the count of those
left out ("… (and 161789 more like this in the last 10 s, not shown)"), and
:func:`flush_repeated` (at server exit, and whenever another record passes)
writes a summary line for causes that went quiet. A server out of file
descriptors used to write one error with a traceback per accept attempt —
160,000 lines in 10 s.

This module imports only the standard library: the service layer uses it
on the hot path.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[REDACTED]"
#: Shorter credential values are not redacted (see the module docstring).
MIN_SECRET_CHARS = 6

#: ``name=value`` pairs that carry a credential in a URL's query string or a log line.
_CREDENTIAL_PARAM = re.compile(
    r"(?i)(?<![a-z0-9])((?:[a-z0-9]+[_.-])*"
    r"(?:api[_-]?key|apikey|key|token|access[_-]?token|accesstoken|refresh[_-]?token|id[_-]?token|"
    r"auth[_-]?token|authtoken|session[_-]?token|client[_-]?secret|clientsecret|secret|password|passwd|pwd|"
    r"signature|sig|credentials?)=)([^&#\s\"'<>,;)\]}]+)")
#: ``Bearer <token>`` / ``Basic <base64>`` (an Authorization header in a message).
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}")


class Redactor:
    """Known secret values, per owner (a workspace), and how to remove them from text.

    :attr:`active` is the one check the hot path makes: true when some value
    is known, or an owner's values are still to be loaded.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, frozenset[str]] = {}
        self._loaders: dict[str, Callable[[], Iterable[str] | None]] = {}
        #: every value in the forms it takes in text, JSON text and URLs; longest first
        self.forms: tuple[str, ...] = ()
        #: the values themselves (what a decoded string holds); longest first
        self.values: tuple[str, ...] = ()
        self.active = False

    # ------------------------------------------------------------ what is known
    def register(self, owner: str, loader: Callable[[], Iterable[str] | None]) -> None:
        """Load ``owner``'s values with ``loader`` when they are first needed (:meth:`load`).

        ``loader`` returns None when it cannot answer any more (its owner is gone).
        """
        with self._lock:
            self._loaders[owner] = loader
            self.active = True

    def load(self) -> None:
        """Run the pending loaders (once each; a failing loader is retried on the next :meth:`refresh`)."""
        if not self._loaders:
            return
        with self._lock:
            loaders, self._loaders = self._loaders, {}
        for owner, loader in loaders.items():
            try:
                values = loader()
            except Exception as exc:  # noqa: BLE001 - never fail an execution over this; say so without values
                logging.getLogger("rf.secrets").warning("cannot read the credential values to redact: %s",
                                                        type(exc).__name__)
                continue
            if values is not None:
                self.set_values(owner, values)
        with self._lock:
            self.active = bool(self.forms or self._loaders)

    def set_values(self, owner: str, values: Iterable[str]) -> None:
        """``owner``'s known values are exactly ``values`` (a credential was set or deleted)."""
        kept = frozenset(v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET_CHARS)
        with self._lock:
            if kept:
                self._values[owner] = kept
            else:
                self._values.pop(owner, None)
            self._rebuild()

    def add(self, owner: str, value: str) -> None:
        """One more value of ``owner`` (a credential read at call time that was not known yet)."""
        if len(value) < MIN_SECRET_CHARS or value in self.values:
            return
        with self._lock:
            self._values[owner] = self._values.get(owner, frozenset()) | {value}
            self._rebuild()

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._loaders.clear()
            self._rebuild()

    def _rebuild(self) -> None:
        values = set().union(*self._values.values()) if self._values else set()
        forms = set(values)
        for value in values:
            forms.add(json.dumps(value, ensure_ascii=False)[1:-1])  # inside JSON text
            forms.add(json.dumps(value)[1:-1])  # inside ASCII-only JSON text
            forms.add(quote(value, safe=""))  # in a URL (a connector's query string, echoed back)
            forms.add(quote_plus(value))
        self.forms = tuple(sorted((f for f in forms if len(f) >= MIN_SECRET_CHARS), key=len, reverse=True))
        self.values = tuple(sorted(values, key=len, reverse=True))
        self.active = bool(self.forms or self._loaders)

    # ------------------------------------------------------------ redacting
    def found(self, text: str) -> bool:
        """Whether ``text`` holds a known value in any of its forms."""
        for form in self.forms:  # noqa: SIM110 - a plain loop: any() over a generator costs more than the searches
            if form in text:
                return True
        return False

    def text(self, text: str) -> str:
        """``text`` with every known value (in any of its forms) replaced by ``[REDACTED]``."""
        for form in self.forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def value(self, value: Any) -> Any:
        """A JSON-like value with known values replaced in every string (keys included)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value

    def json_text(self, text: str) -> str:
        """JSON text with known values redacted inside its strings: the text itself when it
        holds none (the cost: one search per form), else decoded, redacted, encoded again —
        so it stays valid JSON whatever the value looks like (a number, say)."""
        if not self.found(text):
            return text
        from rf.jsonfast import dumps_lenient, loads

        try:
            return dumps_lenient(self.value(loads(text)))
        except ValueError:  # not JSON after all: redact it as text
            return self.text(text)


#: The known credential values of this process (see the module docstring).
KNOWN = Redactor()


def redact_text(text: str) -> str:
    """Log text without known values and query-string or header credentials."""
    if KNOWN.forms:
        text = KNOWN.text(text)
    if "=" in text:
        text = _CREDENTIAL_PARAM.sub(r"\1" + REDACTED, text)
    if "earer" in text or "asic" in text:
        text = _AUTH_SCHEME.sub(r"\1\2" + REDACTED, text)
    return text


# ---------------------------------------------------------------- log records

_formatter = logging.Formatter()


def redact_record(record: logging.LogRecord) -> None:
    """Redact a log record in place: its message, arguments, exception and stack text."""
    if getattr(record, "_rf_redacted", False):
        return
    record._rf_redacted = True
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a malformed record: logging reports it itself
        message = None
    if message is not None and redact_text(message) != message:
        args = record.args
        if isinstance(args, tuple) and args:
            # Arguments one by one, so a formatter that reads them (uvicorn's access log) still can.
            record.args = tuple(redact_text(a) if isinstance(a, str) else
                                a if a is None or isinstance(a, int | float) else redact_text(str(a))
                                for a in args)
            if isinstance(record.msg, str):
                record.msg = redact_text(record.msg)
        try:
            clean = redact_text(record.getMessage()) == record.getMessage()
        except Exception:  # noqa: BLE001
            clean = False
        if not clean:
            record.msg, record.args = redact_text(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = _formatter.formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact_text(record.exc_text)
    if record.stack_info:
        record.stack_info = redact_text(record.stack_info)


class RedactFilter(logging.Filter):
    """Removes known credential values and query-string credentials from every record it sees."""

    def filter(self, record: logging.LogRecord) -> bool:
        redact_record(record)
        return True


class RfHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """rf's one log handler: stderr, one format, redacting."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.addFilter(RedactFilter())


#: Records of one cause let through per interval (see :class:`RepeatFilter`).
REPEAT_BURST = 5
#: Seconds of one interval.
REPEAT_INTERVAL_S = 10.0
#: Causes remembered at most (the oldest quiet ones are forgotten first).
_REPEAT_MAX_CAUSES = 1000
#: A token holding a digit (an id, a number, an address): blanked when telling causes apart.
_TOKENS_WITH_DIGITS = re.compile(r"[\w.:-]*\d[\w.:-]*")


class _Cause:
    __slots__ = ("left_out", "record", "shown", "started")

    def __init__(self, started: float) -> None:
        self.started = started  #: when this interval began (record time)
        self.shown = 0  #: records let through in this interval
        self.left_out = 0  #: records held back in this interval
        self.record: logging.LogRecord | None = None  #: the last one held back


class RepeatFilter(logging.Filter):
    """Rate-limits the records of *handler* per cause (see the module docstring).

    A cause is the logger, the level, the first line of the message template
    with numbers and addresses blanked, and the exception type: asyncio's
    "socket.accept() out of system resource" with ``OSError`` is one cause,
    whatever the socket's repr says.
    """

    def __init__(self, handler: logging.Handler, *, burst: int = REPEAT_BURST,
                 interval_s: float = REPEAT_INTERVAL_S) -> None:
        super().__init__()
        self._handler = weakref.ref(handler)
        self.burst = burst
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._causes: dict[tuple[Any, ...], _Cause] = {}
        self._pending = 0  #: causes with records held back
        _repeat_filters.add(self)

    @staticmethod
    def cause(record: logging.LogRecord) -> tuple[Any, ...]:
        """The logger, level, first line of the message as written (so two reasons logged
        through one template stay two causes) with every token holding a digit blanked (an
        id, a count, a port), and the exception type."""
        try:
            msg = record.getMessage()
        except Exception:  # noqa: BLE001 - a record whose args do not fit its template
            msg = record.msg if isinstance(record.msg, str) else type(record.msg).__name__
        first = msg.split("\n", 1)[0][:200]
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        return record.name, record.levelno, _TOKENS_WITH_DIGITS.sub("#", first), exc

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_rf_summary", False):
            return True
        key = self.cause(record)
        now = record.created
        due: list[logging.LogRecord] = []
        with self._lock:
            if self._pending:
                due = self._due(now, key)
            cause = self._causes.get(key)
            if cause is None or now - cause.started >= self.interval_s:
                if cause is not None and cause.left_out:
                    self._pending -= 1
                    _append(record, f" (and {cause.left_out} more like this in the last "
                                    f"{self._span(cause, now)}, not shown)")
                if cause is None and len(self._causes) >= _REPEAT_MAX_CAUSES:
                    self._forget(now)
                cause = self._causes[key] = _Cause(now)
            if cause.shown < self.burst:
                cause.shown += 1
                passed = True
            else:
                if not cause.left_out:
                    self._pending += 1
                cause.left_out += 1
                cause.record = record
                passed = False
        self._emit(due)
        return passed

    def flush(self, now: float | None = None) -> None:
        """Write a summary line now for every cause with records held back."""
        with self._lock:
            due = self._due(time.time() if now is None else now, None, all_=True)
        self._emit(due)

    # ------------------------------------------------------------ internals (under the lock)
    def _span(self, cause: _Cause, now: float) -> str:
        return f"{min(now - cause.started, self.interval_s):.0f} s"

    def _due(self, now: float, skip: tuple[Any, ...] | None, all_: bool = False) -> list[logging.LogRecord]:
        """Summaries of the causes whose interval is over (all of them with *all_*), but *skip*."""
        due = []
        for key, cause in self._causes.items():
            if cause.left_out and key != skip and (all_ or now - cause.started >= self.interval_s):
                due.append(self._summary(cause, now))
                self._pending -= 1
                cause.left_out, cause.record = 0, None
                cause.started, cause.shown = now, self.burst  # a summary was just written: hold the next ones
        return due

    def _summary(self, cause: _Cause, now: float) -> logging.LogRecord:
        last = cause.record
        assert last is not None
        try:
            text = last.getMessage().split("\n", 1)[0]
        except Exception:  # noqa: BLE001 - a malformed record: summarise its template
            text = str(last.msg)
        exc = last.exc_info[0].__name__ if last.exc_info and last.exc_info[0] else ""
        record = logging.LogRecord(last.name, last.levelno, last.pathname, last.lineno,
                                   "%s%s (repeated %d more times in the last %s, not shown)",
                                   (text, f" [{exc}]" if exc else "", cause.left_out, self._span(cause, now)),
                                   None)
        record._rf_summary = True
        return record

    def _forget(self, now: float) -> None:
        for key in [k for k, c in self._causes.items() if not c.left_out and now - c.started >= self.interval_s]:
            del self._causes[key]
        if len(self._causes) >= _REPEAT_MAX_CAUSES:  # all recent: forget the oldest half
            for key in sorted(self._causes, key=lambda k: self._causes[k].started)[:_REPEAT_MAX_CAUSES // 2]:
                if self._causes[key].left_out:
                    self._pending -= 1
                del self._causes[key]

    def _emit(self, records: list[logging.LogRecord]) -> None:
        handler = self._handler()
        if handler is None:
            return
        for record in records:
            handler.handle(record)


def _append(record: logging.LogRecord, text: str) -> None:
    """Add *text* to the end of a record's first line."""
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001
        return
    first, sep, rest = message.partition("\n")
    record.msg, record.args = first + text + sep + rest, None


_repeat_filters: weakref.WeakSet[RepeatFilter] = weakref.WeakSet()


def flush_repeated() -> None:
    """Write the summary lines of every :class:`RepeatFilter` now (the server is stopping)."""
    for repeat in list(_repeat_filters):
        repeat.flush()


def add_repeat_filter(handler: logging.Handler) -> None:
    """Rate-limit *handler*'s records per cause (once per handler)."""
    if not any(isinstance(f, RepeatFilter) for f in handler.filters):
        handler.addFilter(RepeatFilter(handler))


_factory_installed = False


def _install_record_factory() -> None:
    """Redact every record as it is made, whatever handler gets it later (the dashboard adds its
    own file handler after start-up)."""
    global _factory_installed
    if _factory_installed:
        return
    _factory_installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        redact_record(record)
        return record

    logging.setLogRecordFactory(factory)


def level_from_env() -> int:
    """``RF_LOG_LEVEL`` (debug, info, warning, error, critical) as a number; WARNING otherwise."""
    name = (os.environ.get("RF_LOG_LEVEL") or "warning").strip().upper()
    level = logging.getLevelName(name)
    return level if isinstance(level, int) else logging.WARNING


def configure() -> None:
    """Set up logging for a server process (``rf serve``, ``rf ui``); safe to call again.

    Call it after the web stack is built: Litestar puts a handler of its own
    on the root logger at INFO, which would print every library's INFO lines
    (httpx's outbound URLs among them).
    """
    level = level_from_env()
    root = logging.getLogger()
    # Our handler replaces what Litestar set on the root logger (a queue handler printing at INFO);
    # anyone else's (a test's log capture) stays, with the filter added.
    kept = [h for h in root.handlers if not type(h).__module__.startswith("litestar")]
    if not any(isinstance(h, RfHandler) for h in kept):
        kept.append(RfHandler())
    root.handlers = kept
    root.setLevel(level)
    litestar = logging.getLogger("litestar")
    litestar.handlers = []
    litestar.propagate = True
    logging.getLogger("rf").setLevel(level)
    for name in ("httpx", "httpx2", "httpcore"):  # they log every outbound URL at INFO, headers at DEBUG
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):  # keep uvicorn's handlers; redact there too
        for handler in logging.getLogger(name).handlers:
            if not any(isinstance(f, RedactFilter) for f in handler.filters):
                handler.addFilter(RedactFilter())
            # Floods folded on rf's handler and uvicorn's error log; not on the access log (one line
            # per request is its point) nor on a handler someone else added (a test's log capture).
            if isinstance(handler, RfHandler) or name in ("uvicorn", "uvicorn.error"):
                add_repeat_filter(handler)
    _install_record_factory()
