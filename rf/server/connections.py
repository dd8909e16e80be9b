"""What one slow or greedy client can hold: timeouts and a limit on connections.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``), but it
has no deadline for a request that never completes: a client that sends half
its headers, or a body that stops, holds its connection (and a file
descriptor) forever. ``[server]`` in rf.toml sets (defaults in brackets):

- ``header_timeout_s`` (10): a connection must send complete request headers
  within this many seconds of opening (or, on a keep-alive connection, of its
  next request's first byte); else it is answered 408 (if it sent anything)
  and closed.
- ``body_timeout_s`` (10): a request body may pause this long at most, and
  must be complete within six times this; else 408 (when no response has
  started) and the connection is closed. The route reading it sees a
  disconnect.
- ``keep_alive_s`` (5): uvicorn's idle keep-alive timeout.
- ``max_connections`` (1000): above this many open connections, a request is
  answered 503 (``too_many_connections``, ``Retry-After: 1``, connection
  closed), and the connection gets one second, not ``header_timeout_s``, to
  send its headers, so excess connections do not hold descriptors long.

**Cost.** No timer per request or per connection: one timer per server
(:class:`_Sweeper`) looks at the open connections four times a second while
there are any, and stops when there are none. Per connection, one clock read
when it opens; per chunk received, one counter bump (how a stalled body is
told from a slow one).

**Out of descriptors.** Python 3.11's asyncio accept loop, on ``EMFILE``,
logs an error and schedules a retry for *each* of up to ``backlog`` (2048)
accept attempts of one burst — the cause of 160,000 log lines in 10 s in a
measured flood. :class:`ListeningSocket` lets one such error through per burst
and ends the rest of the burst quietly (asyncio has already paused accepting
for a second); :func:`raise_open_files_limit` raises the soft descriptor limit
to the hard one at start-up, and the connection limit is lowered to fit below
the descriptor limit.
"""

from __future__ import annotations

import errno
import logging
import math
import resource
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from rf.errors import WorkspaceError
from rf.jsonfast import dumpb

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("rf.server")

#: How often the open connections are checked (seconds); a timeout fires up to this late.
TICK_S = 0.25
#: A request body must be complete within this many times ``body_timeout_s``.
BODY_TOTAL_FACTOR = 6
#: Seconds a connection above ``max_connections`` gets to send its headers (then: 503).
OVER_LIMIT_HEADER_S = 1.0

_NONE, _HEADERS, _BODY = 0, 1, 2


@dataclass(frozen=True)
class ConnectionLimits:
    """The ``[server]`` timeouts and connection limit (see the module docstring)."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 10.0
    keep_alive_s: float = 5.0
    max_connections: int = 1000

    @property
    def body_total_s(self) -> float:
        return BODY_TOTAL_FACTOR * self.body_timeout_s


_KEYS = {"header_timeout_s": "seconds", "body_timeout_s": "seconds", "keep_alive_s": "seconds",
         "max_connections": "connections"}


def limits_from(server: dict[str, Any], source: str) -> ConnectionLimits:
    """The limits set in an rf.toml ``[server]`` table (*source*: the file, for errors)."""
    values: dict[str, Any] = {}
    for key, unit in _KEYS.items():
        if key not in server:
            continue
        value = server[key]
        whole = key == "max_connections"
        ok = (isinstance(value, int) if whole else isinstance(value, int | float)) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value <= 0:
            kind = "a whole number" if whole else "a number"
            raise WorkspaceError(f"{source}: [server] {key} must be {kind} of {unit} above 0, not {value!r}",
                                 "fix rf.toml")
        values[key] = int(value) if whole else float(value)
    return ConnectionLimits(**values)


def raise_open_files_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit; return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def fit_to_descriptors(limits: ConnectionLimits, open_files: int) -> ConnectionLimits:
    """*limits* with ``max_connections`` lowered, when needed, to leave room below *open_files*
    for the server's own files (the database, worker pipes, over-limit connections)."""
    room = max(1, open_files - max(64, open_files // 8))
    if limits.max_connections <= room:
        return limits
    return ConnectionLimits(limits.header_timeout_s, limits.body_timeout_s, limits.keep_alive_s, room)


# ---------------------------------------------------------------- accepting

_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))


class ListeningSocket(socket.socket):
    """The server's listening socket: one out-of-descriptors error per accept burst.

    asyncio (3.11) calls ``accept()`` up to ``backlog`` times per readiness
    event; on ``EMFILE`` it logs, stops reading the socket and schedules a
    retry in a second — and then goes on with the next attempt, which fails
    the same way. The first failure goes through (so asyncio pauses and logs
    once); failures within the next half second end the burst as "nothing to
    accept".
    """

    _out_of_resources_at = -math.inf

    def accept(self) -> tuple[socket.socket, Any]:
        try:
            return super().accept()
        except OSError as exc:
            if exc.errno not in _OUT_OF_RESOURCES:
                raise
            now = time.monotonic()
            if now - self._out_of_resources_at < 0.5:
                raise BlockingIOError(errno.EAGAIN, "accepting paused: out of file descriptors") from None
            self._out_of_resources_at = now
            raise


# ---------------------------------------------------------------- the protocol


def _error_body(code: str, message: str, hint: str) -> bytes:
    return dumpb({"error": {"code": code, "message": message, "hint": hint}})


def _raw_response(status: str, body: bytes, *extra: str) -> bytes:
    head = [f"HTTP/1.1 {status}", "content-type: application/json", f"content-length: {len(body)}",
            "connection: close", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


def _over_limit_app(limit: int) -> Any:
    body = _error_body("too_many_connections",
                       f"the server has more than {limit} open connections ([server] max_connections)",
                       "retry in a moment; if this is normal load, raise [server] max_connections in rf.toml")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"retry-after", b"1"), (b"connection", b"close")]

    async def too_many_connections(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return too_many_connections


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and body deadlines and the connection limit.

    Subclassed per server by :func:`protocol_class` (``limits`` is a class attribute).
    """

    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    _over_limit: ClassVar[Any] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keep_alive_s  # type: ignore[assignment]  # a float is fine
        self._chunks = 0  #: data_received calls so far (the body-stall check compares it)
        self._header_limit = self.limits.header_timeout_s
        self._watch = _NONE  #: what the sweeper saw this connection wait for
        self._watch_cycle: Any = None  #: ... for which request (None: the first)
        self._watch_since = 0.0  #: ... since when (loop time)
        self._watch_progress_at = 0.0  #: ... the body's last progress
        self._watch_chunks = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch, self._watch_since = _HEADERS, self.loop.time()
        if len(self.connections) > self.limits.max_connections:
            self.app = type(self)._over_limit
            self._header_limit = min(OVER_LIMIT_HEADER_S, self._header_limit)
            log.info("%d open connections, above [server] max_connections: answering 503",
                     len(self.connections))
        _Sweeper.watch(self)

    def data_received(self, data: bytes) -> None:
        self._chunks += 1
        super().data_received(data)

    # ------------------------------------------------------------ the sweeper's check
    def check_deadlines(self, now: float) -> None:
        """Close this connection if its request headers or body are overdue (called by the sweeper)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        state = self.conn.their_state
        cycle = self.cycle
        if state is h11.IDLE:
            if self.timeout_keep_alive_task is not None:
                self._watch = _NONE  # idle between requests: uvicorn's keep-alive timeout closes it
                return
            if self._watch != _HEADERS or self._watch_cycle is not cycle:
                self._watch, self._watch_cycle, self._watch_since = _HEADERS, cycle, now
            elif now - self._watch_since >= self._header_limit:
                self._time_out(f"request headers not complete within {self._header_limit:g} s",
                               answer=self._chunks > 0)
        elif state is h11.SEND_BODY:
            if self._watch != _BODY or self._watch_cycle is not cycle:
                self._watch, self._watch_cycle = _BODY, cycle
                self._watch_since = self._watch_progress_at = now
                self._watch_chunks = self._chunks
            elif (self._chunks != self._watch_chunks or self.flow.read_paused
                  or (cycle is not None and cycle.waiting_for_100_continue)):
                # Data came, or the server itself is not reading (the route is slow to take the
                # body, or has not asked for it yet): not the client's stall.
                self._watch_progress_at, self._watch_chunks = now, self._chunks
            limits = self.limits
            if now - self._watch_progress_at >= limits.body_timeout_s:
                self._time_out(f"request body stalled: no bytes for {limits.body_timeout_s:g} s",
                               answer=cycle is not None and not cycle.response_started)
            elif now - self._watch_since >= limits.body_total_s:
                self._time_out(f"request body not complete within {limits.body_total_s:g} s",
                               answer=cycle is not None and not cycle.response_started)
        else:
            self._watch = _NONE

    def _time_out(self, why: str, *, answer: bool) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The route waiting on the body gets a disconnect, and anything it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
        if answer:
            body = _error_body("request_timeout", why,
                               "send the whole request promptly ([server] header_timeout_s / body_timeout_s)")
            self.transport.write(_raw_response("408 Request Timeout", body))
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closed the connection from %s: %s", client, why)
        self.transport.close()


def protocol_class(limits: ConnectionLimits) -> type[LimitedH11Protocol]:
    """The protocol class for uvicorn's ``http=`` with these limits."""
    return type("LimitedH11Protocol", (LimitedH11Protocol,),
                {"limits": limits, "_over_limit": _over_limit_app(limits.max_connections)})


class _Sweeper:
    """One timer per server: checks every open connection each :data:`TICK_S` while there are any."""

    def __init__(self, protocol: LimitedH11Protocol) -> None:
        self.loop = protocol.loop
        self.connections = protocol.connections
        self.handle: asyncio.TimerHandle | None = None

    @classmethod
    def watch(cls, protocol: LimitedH11Protocol) -> None:
        state = protocol.server_state
        sweeper: _Sweeper | None = getattr(state, "rf_sweeper", None)
        if sweeper is None or sweeper.loop is not protocol.loop:
            sweeper = cls(protocol)
            state.rf_sweeper = sweeper  # type: ignore[attr-defined]
        if sweeper.handle is None:
            sweeper.handle = sweeper.loop.call_later(TICK_S, sweeper.sweep)

    def sweep(self) -> None:
        self.handle = None
        now = self.loop.time()
        for protocol in list(self.connections):
            if isinstance(protocol, LimitedH11Protocol):
                try:
                    protocol.check_deadlines(now)
                except Exception:  # one odd connection must not stop the checks for all
                    log.exception("checking a connection's deadlines failed")
        if self.connections:
            self.handle = self.loop.call_later(TICK_S, self.sweep)
