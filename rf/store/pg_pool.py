"""The PostgreSQL store's connections: a bounded pool, leased per statement.

A thread does not own a connection. :class:`rf.store.pg.PgCursor` takes one from the pool
for each statement (reads its whole result, hands it back), so the number of connections
follows the statements running at once, not the threads that ever touched the store (an
``rf serve`` has a few hundred: the event loop's executor, host calls, runs, triggers).
A transaction (and ``PgStore.write_lock``, whose advisory lock is a session's) pins one
connection to its thread until it ends (:meth:`PgStore._pin`).

- **Bound.** At most ``size`` connections (``[store] max_connections`` minus the batching
  writer's and the replica listener's own). A caller that finds them all busy waits up to
  ``wait_s``, then gets a StoreError that names the setting.
- **Connect in the caller.** A new connection is made on the thread that needs it, so a
  refused password or an unreachable server is the caller's clear error at once (a pool
  that connects in the background can only time out).
- **Health.** A connection handed back broken (server restart, network) is closed and
  forgotten, and with it every idle one (made before the restart too): a read that failed
  that way runs again once on a new connection (rf.store.pg.PgCursor), so a restarted or
  failed-over server costs the writes in flight at that moment, not an error per pooled
  connection. One handed back inside a transaction is rolled back. Idle connections beyond
  the newest are closed after ``idle_s``.
- **No background thread.** Idle ones are reaped when the pool is used (a server's heartbeat
  uses it every second).

Why not psycopg_pool: it grows in background workers, so a wrong password or a server that is
down surfaces as ``PoolTimeout`` after the wait, not as the server's own message; and it adds a
dependency and threads for what this module does in a hundred lines.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any

from rf.errors import StoreError

#: The defaults of ``[store] max_connections`` (connections of one rf process to the database, all
#: included) and of the wait for a free one.
DEFAULT_MAX_CONNECTIONS = 20
#: The connections each process keeps apart from the pool: the batching writer's, and in
#: ``rf serve`` the replica listener's (rf.store.pg_replicas).
DEDICATED_CONNECTIONS = 2
MIN_MAX_CONNECTIONS = DEDICATED_CONNECTIONS + 2
DEFAULT_WAIT_S = 10.0
#: Idle connections (beyond the most recently used) are closed after this long.
IDLE_S = 300.0


class ConnectionPool:
    """At most ``size`` psycopg connections made by ``connect``; thread-safe."""

    def __init__(self, connect: Callable[[], Any], *, size: int, wait_s: float = DEFAULT_WAIT_S,
                 idle_s: float = IDLE_S, setting: str = "") -> None:
        if size < 1:
            raise ValueError("a pool needs at least one connection")
        self._connect = connect
        self.size = size
        self.wait_s = wait_s
        self.idle_s = idle_s
        #: what to tell a caller who waited in vain (the setting that sizes this pool)
        self._setting = setting
        self._idle: list[tuple[float, Any]] = []  # (handed back at, connection); the newest last
        self._total = 0  # idle + leased + being opened
        self._cond = threading.Condition(threading.Lock())
        self._closed = False
        #: counters for ``rf store info``
        self.opened = 0
        self.waits = 0

    # ------------------------------------------------------------ lease
    def get(self) -> Any:
        """A connection of the pool (an idle one, else a new one, else one handed back within
        ``wait_s``): give it back with :meth:`put`."""
        deadline: float | None = None
        with self._cond:
            while True:
                if self._closed:
                    raise StoreError("the store is closed", "this is a bug in rf: report it with the command you ran")
                while self._idle:
                    _, con = self._idle.pop()
                    if not (con.closed or con.broken):
                        return con
                    self._total -= 1  # died while idle (the server restarted): forget it
                if self._total < self.size:
                    self._total += 1
                    break
                now = time.monotonic()
                if deadline is None:
                    deadline = now + self.wait_s
                    self.waits += 1
                if now >= deadline:
                    raise StoreError(
                        f"all {self.size} connections of rf's PostgreSQL pool stayed busy for {self.wait_s:g} s",
                        f"raise {self._setting or '[store] max_connections'} in rf.toml (within the PostgreSQL"
                        " server's own max_connections), or send this process less work at once")
                self._cond.wait(deadline - now)
        try:
            con = self._connect()
        except BaseException:
            with self._cond:
                self._total -= 1
                self._cond.notify()
            raise
        with self._cond:
            self.opened += 1
        return con

    def put(self, con: Any, *, discard: bool = False) -> None:
        """Hand *con* back (closed instead when broken, when *discard*, or when the pool is closed)."""
        close = discard or con.closed or con.broken
        if not close:
            close = not _idle_again(con)
        stale: list[Any] = []
        with self._cond:
            if close or self._closed:
                self._total -= 1
                stale.append(con)
            else:
                now = time.monotonic()
                self._idle.append((now, con))
                # The oldest idle ones (never the newest) go after idle_s.
                while len(self._idle) > 1 and now - self._idle[0][0] > self.idle_s:
                    stale.append(self._idle.pop(0)[1])
                    self._total -= 1
            self._cond.notify()
        for old in stale:
            with contextlib.suppress(Exception):
                old.close()

    def drop_idle(self) -> None:
        """Close every idle connection (one turned out dead: the server restarted, and so are they)."""
        self._close_idle(closing=False)

    def _close_idle(self, *, closing: bool) -> None:
        with self._cond:
            if closing:
                self._closed = True
            idle, self._idle = self._idle, []
            self._total -= len(idle)
            self._cond.notify_all()
        for _, con in idle:
            with contextlib.suppress(Exception):
                con.close()

    # ------------------------------------------------------------ state
    def stats(self) -> dict[str, int]:
        """``{"size", "open", "idle", "busy", "opened", "waits"}`` (``rf store info``)."""
        with self._cond:
            idle = len(self._idle)
            return {"size": self.size, "open": self._total, "idle": idle, "busy": self._total - idle,
                    "opened": self.opened, "waits": self.waits}

    def close(self) -> None:
        """Close the idle connections; the leased ones are closed as they come back."""
        self._close_idle(closing=True)


def _idle_again(con: Any) -> bool:
    """Whether *con* can serve the next caller: out of any transaction (rolled back if in one)."""
    from psycopg import pq

    status = con.info.transaction_status
    if status == pq.TransactionStatus.IDLE:
        return True
    if status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
        try:
            con.rollback()
        except Exception:  # noqa: BLE001 - unusable: closed instead
            return False
        return bool(con.info.transaction_status == pq.TransactionStatus.IDLE)
    return False  # ACTIVE (a statement still running) or UNKNOWN (the connection is bad)
