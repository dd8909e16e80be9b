"""Several ``rf serve`` on one PostgreSQL database: the replica registry and cache invalidation.

Everything a server keeps in memory that another server can change lives here or in the database:

- **Writes serialized across servers.** :class:`ClusterWriteLock` is ``PgStore.write_lock``: the
  process's lock, and for its outermost holder a PostgreSQL advisory lock on that thread's
  connection, so a publish's read-check-write (the plan re-checked, then applied) and every
  unit of work run one at a time across all servers, as DuckDB's single writer does in one.
- **Registry.** Each server inserts a ``replicas`` row (its id: rf.store.executions.owner) and
  renews ``heartbeat_at`` every :data:`BEAT_S` (the database's clock, not the hosts'). A row whose
  heartbeat is older than :data:`LAPSE_S` is a dead server: not waited for, its ``running``
  execution markers recorded as interrupted by the survivors, its row removed.
- **Cache invalidation.** A change of heads or routing bumps ``meta.state_version`` and sends
  ``NOTIFY rf_state, '<version>'`` inside its own transaction (triggers on ``agent_heads``,
  ``releases`` and ``canaries``: delivered at its commit, never lost to a crash after it).
  Each server LISTENs on a connection of its own; on a notification it drops its caches, then writes the version to its row
  (``seen_version``). The announcing process waits until every live server's ``seen_version``
  reached the version, at most :data:`CONFIRM_S`, and names those that did not. A missed
  notification (a dropped connection) is caught by the heartbeat, which compares the version.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("rf.replicas")

#: The advisory lock every write of every server on one database takes (``rfwr``).
WRITE_LOCK_KEY = 0x7266_7772
#: The channel of state-version notifications.
CHANNEL = "rf_state"
#: How often a server renews its heartbeat (and checks the state version, in case it missed one).
BEAT_S = 1.0
#: A server whose heartbeat is older than this is gone: not waited for, its executions interrupted
#: (``RF_REPLICA_LAPSE_S``: tests).
LAPSE_S = float(os.environ.get("RF_REPLICA_LAPSE_S") or 5.0)
#: How long an announcement waits for the live servers' confirmations.
CONFIRM_S = 5.0


class ClusterWriteLock:
    """``PgStore.write_lock``: a re-entrant lock of this process, plus (for the outermost holder
    on a thread) a session advisory lock on a connection pinned to that thread (``pin``), held
    until the outermost ``with`` ends (then ``unpin``). Order is always process lock, then
    advisory lock: no cycle."""

    def __init__(self, pin: Callable[[], Any], unpin: Callable[[bool], None],
                 dead: Callable[[], None] = lambda: None) -> None:
        self._lock = threading.RLock()
        self._pin = pin
        self._unpin = unpin
        self._dead = dead  # a pinned connection was found dead: drop the pool's idle ones
        self._local = threading.local()

    def acquire(self) -> bool:
        self._lock.acquire()
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            try:
                self._local.con = self._lock_session()
            except BaseException:
                self._lock.release()
                raise
        self._local.depth = depth + 1
        return True

    def _lock_session(self) -> Any:
        """Pin a connection and take the advisory lock on it; once more on a new connection when the
        pinned one was dead (a restarted server: its session, and any lock, is gone anyway)."""
        for attempt in (1, 2):
            con = self._pin()
            try:
                con.execute("SELECT pg_advisory_lock(%s)", [WRITE_LOCK_KEY])
                return con
            except Exception:
                dead = bool(getattr(con, "broken", False))
                self._unpin(True)
                if attempt == 2 or not dead:
                    raise
                self._dead()
            except BaseException:
                self._unpin(True)
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def after_release(self, callback: Callable[[], Any]) -> None:
        """Run *callback* once this thread no longer holds the lock (now, if it holds none): what
        must not keep every other server's writes waiting (the wait for replicas' confirmations)."""
        if getattr(self._local, "depth", 0) == 0:
            callback()
            return
        pending = getattr(self._local, "after", None)
        if pending is None:
            pending = self._local.after = []
        pending.append(callback)

    def release(self) -> None:
        depth = self._local.depth - 1
        self._local.depth = depth
        try:
            self._release(depth)
        finally:
            pending = getattr(self._local, "after", None) if depth == 0 else None
            if pending:
                self._local.after = None
                for callback in pending:
                    callback()

    def _release(self, depth: int) -> None:
        try:
            if depth == 0:
                con, self._local.con = self._local.con, None
                discard = False
                try:
                    con.execute("SELECT pg_advisory_unlock(%s)", [WRITE_LOCK_KEY])
                except Exception:  # noqa: BLE001 - never leave the lock held: a closed session releases it
                    log.warning("could not release the store's write lock: closing the connection to release it")
                    discard = True
                self._unpin(discard)
        finally:
            self._lock.release()

    def __enter__(self) -> ClusterWriteLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def announce(con: Any, me: str | None, confirm_s: float = CONFIRM_S) -> list[str]:
    """Wait (at most ``confirm_s``) until every live server (``me`` excepted: the caller dropped
    its own caches) confirmed the current state version. The change itself bumped the version
    and notified them in its own transaction (the ``rf_state_changed`` triggers, pg_sql.py).
    Warnings naming the servers that did not confirm."""
    with con.transaction():
        row = con.execute("SELECT value FROM meta WHERE key = 'state_version'").fetchone()
        version = int(row[0]) if row else 0
        if me is not None:
            con.execute("UPDATE replicas SET seen_version = GREATEST(seen_version, %s) WHERE id = %s",
                        [version, me])
    deadline = time.monotonic() + confirm_s
    pause = 0.002
    while True:
        waiting = con.execute(
            "SELECT id, url FROM replicas WHERE seen_version < %s AND id <> %s"
            " AND heartbeat_at > LOCALTIMESTAMP - make_interval(secs => %s)",
            [version, me or "", LAPSE_S]).fetchall()
        if not waiting:
            return []
        if time.monotonic() >= deadline:
            names = ", ".join(f"{url} ({rid.split(':')[0]})" for rid, url in waiting)
            return [f"{len(waiting)} rf server(s) on this database did not confirm the change within "
                    f"{confirm_s:g} s and may still serve the previous state until they do: {names}"]
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class ReplicaLink:
    """This server's place among the servers on one database (see the module doc)."""

    def __init__(self, store: Any, url: str, on_change: Callable[[], None]) -> None:
        from rf.store.executions import owner

        self.store = store
        self.url = url
        self.id = owner()
        self.on_change = on_change
        self.seen = 0
        self._seen_lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listen_con: Any = None

    # ------------------------------------------------------------ life
    def start(self) -> None:
        """LISTEN first, then register with the current version: no notification falls between."""
        self._listen_con = self.store._new_connection()
        self._listen_con.execute(f"LISTEN {CHANNEL}")
        with self.store._lease() as con:
            self.seen = self._version(con)
            con.execute(
                "INSERT INTO replicas (id, url, host, pid, started_at, heartbeat_at, seen_version)"
                " VALUES (%s, %s, %s, %s, LOCALTIMESTAMP, LOCALTIMESTAMP, %s) ON CONFLICT (id) DO UPDATE"
                " SET url = excluded.url, heartbeat_at = LOCALTIMESTAMP, seen_version = excluded.seen_version",
                [self.id, self.url, socket.gethostname(), os.getpid(), self.seen])
        for name, target in (("rf-replica-listen", self._listen_loop), ("rf-replica-beat", self._beat_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Leave the registry (a clean stop: nobody waits for this server any more)."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=3)
        with contextlib.suppress(Exception), self.store._lease() as con:
            con.execute("DELETE FROM replicas WHERE id = %s", [self.id])
        with contextlib.suppress(Exception):
            self._listen_con.close()

    # ------------------------------------------------------------ versions
    @staticmethod
    def _version(con: Any) -> int:
        row = con.execute("SELECT value FROM meta WHERE key = 'state_version'").fetchone()
        return int(row[0]) if row else 0

    def _seen_version(self, version: int) -> None:
        """Drop the caches for ``version`` (once), then confirm it."""
        with self._seen_lock:
            if version <= self.seen:
                return
            self.on_change()
            self.seen = version
        with self.store._lease() as con:
            con.execute("UPDATE replicas SET seen_version = GREATEST(seen_version, %s) WHERE id = %s",
                        [version, self.id])

    # ------------------------------------------------------------ threads
    def _listen_loop(self) -> None:
        while not self._stop.is_set():
            try:
                for note in self._listen_con.notifies(timeout=0.5, stop_after=1):
                    with contextlib.suppress(ValueError):
                        self._seen_version(int(note.payload))
            except Exception:  # the heartbeat catches missed versions; reconnect
                if self._stop.is_set():
                    return
                log.warning("replica: the notification connection failed; reconnecting", exc_info=True)
                self._stop.wait(BEAT_S)
                with contextlib.suppress(Exception):
                    self._listen_con.close()
                with contextlib.suppress(Exception):
                    self._listen_con = self.store._new_connection()
                    self._listen_con.execute(f"LISTEN {CHANNEL}")

    def _beat_loop(self) -> None:
        beats = 0
        while not self._stop.wait(BEAT_S):
            beats += 1
            try:
                with self.store._lease() as con:
                    cur = con.execute("UPDATE replicas SET heartbeat_at = LOCALTIMESTAMP WHERE id = %s", [self.id])
                    if cur.rowcount == 0:  # removed as lapsed (this process was stopped for a while): back in
                        con.execute(
                            "INSERT INTO replicas (id, url, host, pid, started_at, heartbeat_at, seen_version)"
                            " VALUES (%s, %s, %s, %s, LOCALTIMESTAMP, LOCALTIMESTAMP, %s) ON CONFLICT (id) DO NOTHING",
                            [self.id, self.url, socket.gethostname(), os.getpid(), self.seen])
                    version = self._version(con)
                self._seen_version(version)  # a notification this server missed
                if beats % 3 == 0:
                    with self.store._lease() as con:
                        self._tidy(con)
            except Exception:  # tried again next beat
                log.warning("replica heartbeat failed (trying again)", exc_info=True)

    def _tidy(self, con: Any) -> None:
        """Servers gone: their running executions become interrupted ones, their rows go; old claims go."""
        import datetime as dt

        lapsed = con.execute(
            "SELECT id FROM replicas WHERE heartbeat_at <= LOCALTIMESTAMP - make_interval(secs => %s)",
            [LAPSE_S]).fetchall()
        if lapsed:
            self.store.recover_interrupted()  # only markers of servers not alive (PgStore)
            con.execute("DELETE FROM replicas WHERE id = ANY(%s)"
                        " AND heartbeat_at <= LOCALTIMESTAMP - make_interval(secs => %s)",
                        [[r[0] for r in lapsed], LAPSE_S])
            log.warning("rf server(s) %s stopped renewing their heartbeat: removed from the replicas",
                        ", ".join(r[0] for r in lapsed))
        from rf.ids import utcnow

        self.store.purge_claims(time.time(), utcnow() - dt.timedelta(days=1))
