"""SQL for executions (written through the batching writer), and executions in progress.

An execution is one appended row of ``executions`` when it ends (no primary key:
appends stay cheap). A run that lasts longer than about a second is also visible
while it runs: :class:`RunningMarkers` (one per store, in the process that owns
it) knows every execution in flight, and a thread of its own appends a marker row
to ``running_executions`` through the batching writer for each one older than
:data:`MARK_AFTER_S` (and once more when one that was still waiting for a worker
starts). The marker is deleted in the same batch as the execution's final row, so
a reader sees one or the other, never both nor neither. Short runs never touch
the markers: their cost is a dict insert and pop.

A marker whose process is gone (the server was killed or crashed: DuckDB lets one
process open the file, so markers of another process are dead ones) becomes a final
``interrupted`` execution the next time the store is opened (:meth:`ExecutionsMixin.
recover_interrupted`: ``rf serve`` at start-up, another process at its first read).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from rf.ids import datetime_of_ns, iso, micros_of, parse_iso, utcnow
from rf.jsonfast import dumps, dumps_lenient
from rf.models import Execution

if TYPE_CHECKING:
    import duckdb

    from rf.store.writer import BatchWriter

_COLUMNS = (
    "id, env, agent, commit_id, source, status, input, output, error, error_type, traceback, logs,"
    " started_at, ended_at, duration_ms, session_id, queued_ms, parent_id, release_id, arm"
)
_MARKER_COLUMNS = "id, env, agent, commit_id, source, session_id, input, started_at, run_started_at, release_id, arm"
#: The latest marker of each execution (one is written while it waits, another once it runs).
_LATEST = "QUALIFY row_number() OVER (PARTITION BY id ORDER BY marked_at DESC) = 1"

#: An execution still running after this long gets its ``running`` marker.
MARK_AFTER_S = 1.0
#: How often the marker thread looks at what is in flight (a run shows within MARK_AFTER_S + TICK_S).
TICK_S = 0.25
#: The marker thread stops after this many looks at nothing in flight (a new run starts it again).
IDLE_TICKS = 8

INTERRUPTED_ERROR = (
    "the server stopped during this execution (it was killed or crashed): its output, logs, session "
    "messages and memory writes are lost; it was found unfinished when the server started again"
)

_owner: tuple[int, str] | None = None


def owner() -> str:
    """This process, as markers name it: pid and a random part (a pid is reused in time)."""
    global _owner
    pid = os.getpid()
    if _owner is None or _owner[0] != pid:
        _owner = (pid, f"{pid}:{random.SystemRandom().getrandbits(64):016x}")
    return _owner[1]


def _dump(value: Any) -> str | None:
    return None if value is None else dumps(value)


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _ms(delta: _dt.timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0) * 1000.0, 3)


class InFlight(Protocol):
    """What :class:`RunningMarkers` needs of an execution in flight (``ExecutionTrace``)."""

    start_ns: int  #: when the request arrived (``time.time_ns()``)
    run_ns: int  #: when a worker started it; 0 while it waits for one
    marked: int  #: 0: no marker yet; 1: marked while waiting; 2: marked as running (kept by RunningMarkers)

    def marker_row(self) -> tuple[Any, ...]:
        """``running_executions`` values up to ``run_started_at`` (see ``_MARKER_COLUMNS``)."""
        ...


class RunningMarkers:
    """The executions in flight in this process, and their ``running`` markers.

    ``track`` and ``untrack`` are the whole cost of a short run (a dict insert; a pop
    under a lock). A thread wakes every :data:`TICK_S` while anything is in flight and
    queues a marker row for each execution older than :data:`MARK_AFTER_S`, then asks
    the writer to commit at once. The lock orders a marker's insert before its
    deletion: the thread queues a marker only for an execution still tracked, and
    ``untrack`` queues the deletion (in the caller's writer group, with the final row)
    after taking it out.
    """

    def __init__(self, writer: BatchWriter, *, after_s: float = MARK_AFTER_S, tick_s: float = TICK_S) -> None:
        self._writer = writer
        self._after_ns = int(after_s * 1e9)
        self._tick_s = tick_s
        self._inflight: dict[str, InFlight] = {}
        #: the release and arm of production executions in flight (what their markers record)
        self._releases: dict[str, tuple[str | None, str | None]] = {}
        self._lock = threading.Lock()
        self._ticking = False
        #: markers written for executions still in flight (none: readers skip the table)
        self.live = 0

    def track(self, execution_id: str, entry: InFlight, release: tuple[str | None, str | None] | None = None
              ) -> None:
        """An execution started; *release*: the ``(release id, arm)`` it runs (production)."""
        if release is not None:
            self._releases[execution_id] = release
        self._inflight[execution_id] = entry
        if not self._ticking:
            self._start()

    def untrack(self, execution_id: str) -> None:
        """The execution ended (its final row is being queued in this thread's writer group,
        if it has one): its marker, if it got one, is deleted with it."""
        lock = self._lock
        lock.acquire()
        entry = self._inflight.pop(execution_id, None)
        if self._releases:
            self._releases.pop(execution_id, None)
        marked = entry is not None and entry.marked
        if marked:
            self.live -= 1
        lock.release()
        if marked:
            self._writer.delete("running_executions", "id", execution_id)

    def _start(self) -> None:
        with self._lock:
            if self._ticking:
                return
            self._ticking = True
        threading.Thread(target=self._loop, name="rf-running-markers", daemon=True).start()

    def _loop(self) -> None:
        idle = 0
        while True:
            time.sleep(self._tick_s)
            if self._inflight:
                idle = 0
                try:
                    self._tick()
                except RuntimeError:  # the writer is closed: the store was closed
                    with self._lock:
                        self._ticking = False
                    return
                continue
            idle += 1
            if idle >= IDLE_TICKS:
                with self._lock:
                    if not self._inflight:
                        self._ticking = False
                        return
                idle = 0

    def _tick(self) -> None:
        now = time.time_ns()
        due = now - self._after_ns
        candidates = [(execution_id, entry) for execution_id, entry in list(self._inflight.items())
                      if (not entry.marked and entry.start_ns <= due) or (entry.marked == 1 and entry.run_ns)]
        if not candidates:
            return
        rows = [(execution_id, entry, entry.marker_row()) for execution_id, entry in candidates]  # inputs encoded here
        tail = (datetime_of_ns(now), owner())
        queued = False
        with self._lock:
            for execution_id, entry, row in rows:
                if self._inflight.get(execution_id) is not entry:
                    continue  # it ended meanwhile: no marker
                self._writer.put("running_executions", (*row, *tail, *self._releases.get(execution_id, _NO_RELEASE)))
                if not entry.marked:
                    self.live += 1
                entry.marked = 1 if row[8] is None else 2
                queued = True
        if queued:
            self._writer.hurry()  # visible and durable now, not after the writer's linger


_NO_RELEASE: tuple[None, None] = (None, None)
_registry_lock = threading.Lock()
_recover_lock = threading.RLock()


class ExecutionsMixin:
    writer: BatchWriter

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def flush(self) -> None:  # provided by Store
        raise NotImplementedError

    @property
    def running(self) -> RunningMarkers:
        """The executions in flight in this process (made on first use)."""
        markers: RunningMarkers | None = self.__dict__.get("_running_markers")
        if markers is None:
            with _registry_lock:
                markers = self.__dict__.get("_running_markers")
                if markers is None:
                    markers = self.__dict__["_running_markers"] = RunningMarkers(self.writer)
        return markers

    def record_execution(self, ex: Execution, started: _dt.datetime | None = None,
                         ended: _dt.datetime | None = None, root_span: str | None = None) -> None:
        """Queue an execution row (``started``/``ended``: its times as datetimes, when the
        caller has them; ``root_span``: its trace's root span, see rf.store.traces); it is
        durable after the writer's next batch. A value the table cannot hold (a missing
        required field, another type) is refused here (UsageError), not queued."""
        row = (
            ex.id, ex.env, ex.agent, ex.commit, ex.source, ex.status,
            _dump(ex.input), _dump(ex.output), ex.error, ex.error_type, ex.traceback, ex.logs,
            started or parse_iso(ex.started_at), ended or parse_iso(ex.ended_at), ex.duration_ms,
            ex.session_id, root_span, ex.queued_ms, ex.parent_id, ex.release_id, ex.arm,
        )
        writer = self.writer
        writer.check("executions", (row,))
        writer.put("executions", row)

    @staticmethod
    def _execution(row: tuple[Any, ...]) -> Execution:
        return Execution(
            id=row[0], env=row[1], agent=row[2], commit=row[3], source=row[4], status=row[5],
            input=_load(row[6]), output=_load(row[7]), error=row[8], error_type=row[9],
            traceback=row[10], logs=row[11] or "", started_at=iso(row[12]), ended_at=iso(row[13]),
            duration_ms=row[14], session_id=row[15], queued_ms=row[16] or 0.0, parent_id=row[17],
            release_id=row[18], arm=row[19],
        )

    @staticmethod
    def _running_execution(row: tuple[Any, ...], now: _dt.datetime) -> Execution:
        """A marker as an execution in progress: ``queued_ms`` its wait for a worker (so far, if
        it still waits), ``duration_ms`` how long it has run so far; no ``ended_at``."""
        started, run_started = row[7], row[8]
        if run_started is None:
            queued, ran = _ms(now - started), 0.0
        else:
            queued, ran = _ms(run_started - started), _ms(now - run_started)
        return Execution(
            id=row[0], env=row[1], agent=row[2], commit=row[3], source=row[4], status="running",
            input=_load(row[6]), started_at=iso(started), duration_ms=ran, queued_ms=queued, session_id=row[5],
            release_id=row[9], arm=row[10],
        )

    # ------------------------------------------------------------ interrupted executions
    def _markers_checked(self) -> bool:
        """Whether markers may need reading: none of this process's executions has one and
        the markers of dead processes were turned into executions (the common case)."""
        if not self.__dict__.get("_markers_recovered"):
            with _recover_lock:
                if not self.__dict__.get("_markers_recovered"):
                    self.recover_interrupted()
        markers: RunningMarkers | None = self.__dict__.get("_running_markers")
        return markers is not None and markers.live > 0

    #: SQL that keeps the markers of live processes out of recovery: none on DuckDB (one process
    #: opens the file); the other live servers' on PostgreSQL (rf.store.pg_replicas)
    _LIVE_OWNERS = ""

    def recover_interrupted(self) -> int:
        """Executions another process left ``running`` (a server killed or crashed during
        them) become final ``interrupted`` executions, ended now (when they were found),
        with a root span saying so. Only the process that owns the store runs executions,
        so any marker of another process is a dead one. Runs once per store (``rf serve``
        calls it at start-up; otherwise the first read of executions does). How many."""
        try:
            return self._recover_interrupted()
        finally:
            self.__dict__["_markers_recovered"] = True

    def _recover_interrupted(self) -> int:
        cur = self.cursor()
        self.flush()
        rows = cur.execute(
            f"SELECT {_MARKER_COLUMNS} FROM running_executions WHERE owner <> ?{self._LIVE_OWNERS} {_LATEST}"
            " ORDER BY id", [owner()]
        ).fetchall()
        if not rows:
            return 0
        earliest = min(r[7] for r in rows) - _dt.timedelta(minutes=1)
        ended = {r[0] for r in cur.execute(  # a final row anyway (cannot happen: deleted in one batch)
            "SELECT id FROM executions WHERE id IN (SELECT unnest(?)) AND started_at >= ?",
            [[r[0] for r in rows], earliest]).fetchall()}
        now = utcnow()
        writer = self.writer
        writer.begin_group()
        try:
            for row in rows:
                if row[0] not in ended:
                    self._record_interrupted(row, now)
                writer.delete("running_executions", "id", row[0])
        finally:
            writer.end_group()
        self.flush()
        return len(rows) - len(ended)

    def _record_interrupted(self, row: tuple[Any, ...], now: _dt.datetime) -> None:
        execution_id, env, agent, commit, source, session_id, input_text, started, run_started, release_id, arm = row
        queued = _ms((run_started or started) - started)
        ran = _ms(now - (run_started or started))
        ex = Execution(
            id=execution_id, env=env, agent=agent, commit=commit, source=source, status="interrupted",
            error=INTERRUPTED_ERROR, error_type="interrupted", started_at=iso(started), ended_at=iso(now),
            duration_ms=ran, queued_ms=queued, session_id=session_id, release_id=release_id, arm=arm,
        )
        attributes: dict[str, Any] = {"commit": commit, "source": source, "error_type": "interrupted"}
        if session_id:
            attributes["session_id"] = session_id
        ids = f"{random.getrandbits(192):048x}"
        root = dumps_lenient([ids[:32], ids[32:], micros_of(started) * 1000, micros_of(now) * 1000, "error",
                              INTERRUPTED_ERROR, attributes])
        row = (ex.id, env, agent, commit, source, ex.status, input_text, None, ex.error, ex.error_type, None, "",
               started, now, ex.duration_ms, session_id, root, ex.queued_ms, None, release_id, arm)
        self.writer.check("executions", (row,))
        self.writer.put("executions", row)

    # ------------------------------------------------------------ reads
    def list_executions(
        self,
        env: str,
        *,
        agent: str | None = None,
        status: str | None = None,
        source: str | None = None,
        session_id: str | None = None,
        limit: int = 50,
        before: str | None = None,
        full: bool = False,
        release_id: str | None = None,
        arm: str | None = None,
    ) -> list[Execution]:
        """Executions of one environment, newest first (ids sort by time); those still
        running (status ``running``) among them (a marker records the release and arm too)."""
        self.flush()
        markers = self._markers_checked() and status in (None, "running")
        where = ["env = ?"]
        params: list[Any] = [env]
        for column, value in (("agent", agent), ("session_id", session_id), ("release_id", release_id),
                              ("arm", arm)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if source is not None:
            where.append("(source = ? OR starts_with(source, ? || ':'))")
            params.extend([source, source])
        if before is not None:
            where.append("id < ?")
            params.append(before)
        cur = self.cursor()
        found: list[Execution] = []
        if status != "running":
            cols = _COLUMNS if full else _COLUMNS.replace("traceback, logs", "NULL, NULL")
            final_where, final_params = list(where), list(params)
            for column, value in (("status", status),):
                if value is not None:
                    final_where.append(f"{column} = ?")
                    final_params.append(value)
            rows = cur.execute(
                f"SELECT {cols} FROM executions WHERE {' AND '.join(final_where)} ORDER BY id DESC LIMIT ?",
                [*final_params, limit],
            ).fetchall()
            found = [self._execution(r) for r in rows]
        if markers:
            running = cur.execute(
                f"SELECT {_MARKER_COLUMNS} FROM running_executions WHERE {' AND '.join(where)} {_LATEST}"
                " ORDER BY id DESC LIMIT ?", [*params, limit],
            ).fetchall()
            if running:
                now = utcnow()
                ended = {e.id for e in found}  # the final row wins (both exist only for a moment, if ever)
                found += [self._running_execution(r, now) for r in running if r[0] not in ended]
                found.sort(key=lambda e: e.id, reverse=True)
                del found[limit:]
        return found

    def get_execution(self, execution_id: str) -> Execution | None:
        self.flush()
        cur = self.cursor()
        row = cur.execute(f"SELECT {_COLUMNS} FROM executions WHERE id = ?", [execution_id]).fetchone()
        if row is not None:
            return self._execution(row)
        if not self._markers_checked():
            return None
        row = cur.execute(f"SELECT {_MARKER_COLUMNS} FROM running_executions WHERE id = ? {_LATEST}",
                          [execution_id]).fetchone()
        return self._running_execution(row, utcnow()) if row else None

    def find_executions(self, prefix: str, limit: int = 5) -> list[str]:
        self.flush()
        cur = self.cursor()
        found = [r[0] for r in cur.execute(
            "SELECT id FROM executions WHERE starts_with(id, ?) LIMIT ?", [prefix, limit]).fetchall()]
        if len(found) < limit and self._markers_checked():
            found += [r[0] for r in cur.execute(
                "SELECT DISTINCT id FROM running_executions WHERE starts_with(id, ?) LIMIT ?",
                [prefix, limit]).fetchall() if r[0] not in found]
        return found[:limit]

    def count_executions(self, env: str) -> int:
        """Executions of one environment that ended (those running are not counted)."""
        self.flush()
        row = self.cursor().execute("SELECT count(*) FROM executions WHERE env = ?", [env]).fetchone()
        return int(row[0]) if row else 0
