"""The trigger scheduler: runs inside the server (``rf serve`` / ``rf ui``).

It decides *when* triggers fire; :meth:`TriggersService.fire_trigger` decides
*what* runs (the trigger's environment, that environment's commit). The clock
is injectable and :meth:`Scheduler.tick` does one pass, so tests can walk
through time without sleeping.

- Schedule triggers fire at their cron slots (optionally in a timezone; five
  fields, or six with seconds last: the loop ticks every second). Each handled
  slot is recorded (``last_scheduled_at``), so a restart does not fire a slot
  twice. With several servers on one PostgreSQL database (replicas), each slot
  is claimed in the store first (``trigger_slots``) and only the winner fires it.
- Missed slots while the server was down are not replayed, unless the trigger
  says ``catch_up = "last"``: then the latest missed slot runs once at start.
- Overlap policy ``skip`` (default): a slot is skipped while the previous run
  of the same trigger is still going.
- Watch triggers: one watchfiles thread per live, enabled trigger; changes
  are debounced and passed to the agent as ``{"changes": [...]}``.
- A paused production trigger (``enabled`` false, set only by a release) is
  neither ticked nor watched; when a release resumes or reschedules it, its
  slots count from then (``last_scheduled_at``), so missed slots never fire.

Supervision: the tick loop and each watcher run in their own thread, and the
supervisor (the ``rf-scheduler`` thread, which catches everything so it never
dies) starts a thread that stopped with an error again after a growing delay
(:class:`Backoff`: 1 s, 2 s, 4 s … up to 60 s; back to 1 s once the thread has
run fine for 60 s). A watched path that is deleted ends its watcher (watchfiles
would go on watching nothing), which then retries until the path is back; a
path replaced by another file or directory is watched again at once. One
schedule trigger that fails to tick (say, a time zone this machine lacks) is
recorded and retried next tick without holding up the others. The last error
of each (message, time, restarts, next retry) is kept in the server's memory
(:class:`TriggerHealth`, ``Services.trigger_health``, never stored) and shows
on the trigger read through the server: ``rf triggers list``/``show``, the
dashboard's Triggers view.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rf.ids import iso, parse_iso, utcnow

if TYPE_CHECKING:
    from rf.services import Services

log = logging.getLogger("rf.scheduler")

#: The :class:`TriggerHealth` key of the tick loop (its errors show on every live, enabled schedule trigger).
TICK_KEY = "scheduler"
#: Longest error text kept (one line; the server log has the traceback).
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Backoff:
    """How long a failed watcher or tick loop waits before it is started again."""

    first_s: float = 1.0  #: the wait after the first failure; doubled after each next one
    cap_s: float = 60.0  #: the longest wait
    healthy_s: float = 60.0  #: a thread that ran this long before failing waits ``first_s`` again

    def delay(self, failures: int) -> float:
        """The wait after ``failures`` failures in a row (1 → ``first_s``)."""
        return float(min(self.cap_s, self.first_s * 2 ** min(max(failures - 1, 0), 30)))

    @classmethod
    def from_env(cls) -> Backoff:
        """The default, or ``RF_TRIGGER_RETRY_S="FIRST[,CAP]"`` seconds (tests, impatient operators)."""
        raw = os.environ.get("RF_TRIGGER_RETRY_S", "").strip()
        if not raw:
            return cls()
        try:
            parts = [float(p) for p in raw.split(",")]
        except ValueError:
            parts = []
        if not 1 <= len(parts) <= 2 or parts[0] <= 0 or (len(parts) == 2 and parts[1] < parts[0]):
            log.warning("RF_TRIGGER_RETRY_S=%r is not FIRST[,CAP] in seconds (e.g. 1,60): using 1,60", raw)
            return cls()
        return cls(first_s=parts[0], cap_s=parts[1] if len(parts) == 2 else max(parts[0], cls.cap_s))


@dataclass
class Health:
    """The last error of one supervised part (a watcher, a schedule trigger, the tick loop)."""

    error: str | None = None  #: one line, secrets redacted
    error_at: str | None = None  #: when (UTC)
    restarts: int = 0  #: times its thread was started again after an error (since the server started)
    retry_at: str | None = None  #: while it is down: when it is tried again (UTC); None once running


class TriggerHealth:
    """:class:`Health` by trigger id (or :data:`TICK_KEY`), in the server's memory; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, Health] = {}

    def get(self, key: str) -> Health | None:
        """A copy of ``key``'s health, None when it never failed."""
        with self._lock:
            h = self._items.get(key)
            return dataclasses.replace(h) if h is not None else None

    def failed(self, key: str, error: str, retry_in_s: float) -> None:
        with self._lock:
            h = self._items.setdefault(key, Health())
            now = utcnow()
            h.error, h.error_at = error, iso(now)
            h.retry_at = iso(now + dt.timedelta(seconds=retry_in_s))

    def restarted(self, key: str) -> None:
        with self._lock:
            h = self._items.setdefault(key, Health())
            h.restarts += 1
            h.retry_at = None

    def running(self, key: str) -> None:
        """``key`` works again (its last error stays, as history)."""
        with self._lock:
            h = self._items.get(key)
            if h is not None:
                h.retry_at = None

    def forget(self, key: str) -> None:
        with self._lock:
            self._items.pop(key, None)


class WatchPathGone(Exception):
    """The watched path does not exist (any more): the watcher ends, and is retried."""


class _PathReplaced(Exception):
    """The watched path is now another file or directory: watch it again at once (not an error)."""


def error_text(exc: BaseException | None) -> str:
    """One line for an error's health record and ``rf triggers show``: known secrets redacted."""
    from rf.logsetup import redact_text

    if exc is None:
        text = "stopped without an error"
    elif isinstance(exc, WatchPathGone):
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    text = redact_text(" ".join(text.split()))
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None when it does not exist."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st.st_dev, st.st_ino


class _Supervised:
    """One thread the supervisor keeps running: ``body(stop)`` runs until ``stop`` is set."""

    def __init__(self, key: str, name: str, body: Callable[[threading.Event], None], wake: threading.Event,
                 config: Any = None) -> None:
        self.key = key
        self.name = name
        self.body = body
        self.config = config  #: what it was started with (a watcher: its path and overlap)
        self._wake = wake
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.exc: BaseException | None = None
        self.started = 0.0  #: monotonic time of the last start
        self.failures = 0  #: failures in a row: the backoff's exponent
        self.retry = 0.0  #: while ``waiting``: when (monotonic) it is started again
        self.waiting = False  #: it failed and waits for ``retry``

    def start(self) -> None:
        self.exc, self.waiting = None, False
        self.started = time.monotonic()
        self.thread = threading.Thread(target=self._main, name=self.name, daemon=True)
        self.thread.start()

    def _main(self) -> None:
        try:
            self.body(self.stop)  # returning before ``stop`` is set is a failure too (``exc`` None)
        except Exception as exc:  # noqa: BLE001 - whatever it was, the supervisor starts it again
            self.exc = exc
        finally:
            self._wake.set()

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


def latest_slot(schedule: str, timezone: str | None, now: dt.datetime) -> dt.datetime:
    """The newest cron slot at or before ``now`` (naive UTC)."""
    import zoneinfo

    from croniter import croniter

    tz = zoneinfo.ZoneInfo(timezone or "UTC")
    local = (now + dt.timedelta(microseconds=1)).replace(tzinfo=dt.UTC).astimezone(tz)
    prev: dt.datetime = croniter(schedule, local).get_prev(dt.datetime)
    return prev.astimezone(dt.UTC).replace(tzinfo=None)


#: How many fired and skipped slots a scheduler remembers.
RECENT = 1000


class Scheduler:
    """Fires the server's schedule and watch triggers; supervises their threads (see the module doc)."""

    def __init__(self, services: Services, *, clock: Callable[[], dt.datetime] = utcnow, workers: int = 4,
                 watch_debounce_ms: int = 300, backoff: Backoff | None = None) -> None:
        self.services = services
        self.clock = clock
        self.backoff = backoff or Backoff.from_env()
        if services.triggers.trigger_health is None:
            services.triggers.trigger_health = TriggerHealth()
        self.health: TriggerHealth = services.triggers.trigger_health
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rf-trigger")
        self._running: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()  #: set when a supervised thread ends (and by stop)
        self._thread: threading.Thread | None = None
        self._ticker: _Supervised | None = None
        self._armed = False
        self._interval = 1.0
        self._watchers: dict[str, _Supervised] = {}
        self._watchers_lock = threading.Lock()
        self._debounce = watch_debounce_ms
        #: (trigger id, slot), the latest :data:`RECENT` — for tests and `stats` (bounded: a server runs for months)
        self.fired: collections.deque[tuple[str, dt.datetime]] = collections.deque(maxlen=RECENT)
        self.skipped: collections.deque[tuple[str, dt.datetime]] = collections.deque(maxlen=RECENT)
        #: slots another server on the same database claimed first (replicas)
        self.claimed_elsewhere: collections.deque[tuple[str, dt.datetime]] = collections.deque(maxlen=RECENT)

    # ------------------------------------------------------------ schedule
    def _schedule_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.services.store.trigger_rows(live_only=True)
                if r["kind"] == "schedule" and r["enabled"]]

    def arm(self, now: dt.datetime | None = None) -> None:
        """At start: settle slots missed while the server was down (catch_up policy)."""
        now = now or self.clock()
        for row in self._schedule_rows():
            self._each_row(row, self._arm_one, now)

    def _arm_one(self, row: dict[str, Any], now: dt.datetime) -> bool:
        from rf.services.triggers import next_fire

        base = parse_iso(row["last_scheduled_at"] or row["created_at"])
        if next_fire(row["schedule"], row["timezone"], base) > now:
            return False  # nothing missed
        slot = latest_slot(row["schedule"], row["timezone"], now)
        self.services.store.set_trigger_scheduled(row["id"], slot)
        if row["catch_up"] == "last" and self._claim(row["id"], slot):
            log.info("trigger %s: catching up the missed slot %s", row["id"], slot)
            self._fire(row, slot)
        return False

    def tick(self, now: dt.datetime | None = None) -> list[str]:
        """Fire every schedule trigger whose next slot is due; returns their ids."""
        now = now or self.clock()
        return [row["id"] for row in self._schedule_rows() if self._each_row(row, self._tick_one, now)]

    def _each_row(self, row: dict[str, Any], step: Callable[[dict[str, Any], dt.datetime], bool],
                  now: dt.datetime) -> bool:
        """``step(row, now)``; a trigger that fails is recorded in :attr:`health` and tried again
        next tick, and the others still tick."""
        try:
            done = step(row, now)
        except Exception as exc:
            message = error_text(exc)
            log.warning("schedule trigger %s failed (%s); trying again next tick", row["id"], message, exc_info=exc)
            self.health.failed(row["id"], message, self._interval)
            return False
        self.health.running(row["id"])
        return done

    def _tick_one(self, row: dict[str, Any], now: dt.datetime) -> bool:
        from rf.services.triggers import next_fire

        base = parse_iso(row["last_scheduled_at"] or row["created_at"])
        if next_fire(row["schedule"], row["timezone"], base) > now:
            return False
        slot = latest_slot(row["schedule"], row["timezone"], now)
        self.services.store.set_trigger_scheduled(row["id"], slot)
        if not self._claim(row["id"], slot):
            return False
        return self._fire(row, slot)

    def _claim(self, trigger_id: str, slot: dt.datetime) -> bool:
        """Whether this server fires the slot: always with one server; with several on one
        database (replicas), only the one whose claim of (trigger, slot) in the store wins."""
        store = self.services.store
        if not store.shared:
            return True
        if store.claim_trigger_slot(trigger_id, slot, utcnow()):
            return True
        self.claimed_elsewhere.append((trigger_id, slot))
        return False

    def _fire(self, row: dict[str, Any], slot: dt.datetime, extra: dict[str, Any] | None = None) -> bool:
        trigger_id = row["id"]
        with self._lock:
            running = self._running.get(trigger_id)
            if running is not None and not running.done() and row["overlap"] == "skip":
                log.info("trigger %s: previous run still going, skipping slot %s", trigger_id, slot)
                self.skipped.append((trigger_id, slot))
                return False
            self.fired.append((trigger_id, slot))
            self._running[trigger_id] = self._executor.submit(self._run, trigger_id, extra)
        return True

    def _run(self, trigger_id: str, extra: dict[str, Any] | None) -> None:
        from rf.errors import Conflict

        try:
            t = self.services.get_trigger(trigger_id)
            payload = self.services.trigger_input(t, extra)
            self.services.fire_trigger(trigger_id, payload)
        except Conflict as exc:  # paused (a release) or unpublished between the tick and this run
            log.info("trigger %s did not fire: %s", trigger_id, exc.message)
        except Exception:
            log.exception("trigger %s failed to fire", trigger_id)

    def wait_idle(self, timeout: float = 30.0) -> None:
        """Wait for every fired run to finish (tests)."""
        with self._lock:
            futures = list(self._running.values())
        for f in futures:
            f.result(timeout=timeout)

    # ------------------------------------------------------------ watch
    def sync_watchers(self) -> float | None:
        """One watcher per live, enabled watch trigger: start new ones, stop those no longer
        wanted (or whose path changed), start failed ones again once their delay is over.
        Returns the seconds until the next such restart is due (None: none waiting)."""
        wanted = {r["id"]: r for r in self.services.store.trigger_rows(live_only=True)
                  if r["kind"] == "watch" and r["enabled"]}
        waits = []
        with self._watchers_lock:
            if self._stop.is_set():
                return None
            for tid, part in list(self._watchers.items()):
                row = wanted.get(tid)
                if row is None or (row["watch_path"], row["overlap"]) != part.config:
                    del self._watchers[tid]
                    part.stop.set()
                    self.health.forget(tid)
            for tid, row in wanted.items():
                existing = self._watchers.get(tid)
                if existing is None:
                    started = self._watchers[tid] = _Supervised(
                        tid, f"rf-watch-{tid}", functools.partial(self._watch, row), self._wake,
                        config=(row["watch_path"], row["overlap"]))
                    started.start()
                    continue
                wait = self._supervise(existing)
                if wait is not None:
                    waits.append(wait)
        return min(waits, default=None)

    def _watch(self, row: dict[str, Any], stop: threading.Event) -> None:
        from watchfiles import watch

        path = row["watch_path"]
        identity = _identity(path)
        if identity is None:
            raise WatchPathGone("the watched path does not exist")
        # yield_on_timeout: every half second without changes, check that the path is still the
        # one being watched (a deleted directory is otherwise watched silently forever).
        for changes in watch(path, stop_event=stop, debounce=self._debounce, rust_timeout=500,
                             yield_on_timeout=True, raise_interrupt=False):
            if changes:
                listed = sorted(({"change": c.name, "path": p} for c, p in changes), key=lambda d: d["path"])
                self._fire(row, self.clock(), {"changes": listed})
            now = _identity(path)
            if now is None:
                raise WatchPathGone("the watched path was deleted")
            if now != identity:
                raise _PathReplaced(path)

    # ------------------------------------------------------------ supervision
    def _supervise(self, part: _Supervised) -> float | None:
        """Start ``part`` again if it ended and its delay is over; the seconds left if not, else None."""
        if part.stop.is_set() or part.thread is None or self._stop.is_set():
            return None
        now = time.monotonic()
        if part.alive():
            if part.failures and now - part.started >= self.backoff.healthy_s:
                part.failures = 0  # it ran fine for a while: the next failure waits first_s again
            return None
        if not part.waiting:  # it has just ended
            if isinstance(part.exc, _PathReplaced):
                log.info("%s: %s is another file or directory now: watching it again", part.name, part.exc)
                part.start()
                return None
            if now - part.started >= self.backoff.healthy_s:
                part.failures = 0
            part.failures += 1
            delay = self.backoff.delay(part.failures)
            part.waiting, part.retry = True, now + delay
            message = error_text(part.exc)
            self.health.failed(part.key, message, delay)
            expected = part.exc is None or isinstance(part.exc, WatchPathGone)
            what = f"{part.name} ({part.config[0]})" if part.config else part.name
            log.warning("%s failed (%s): starting it again in %.3g s", what, message, delay,
                        exc_info=None if expected else part.exc)
        if now < part.retry:
            return part.retry - now
        self.health.restarted(part.key)
        part.start()
        return None

    def _tick_loop(self, stop: threading.Event) -> None:
        if not self._armed:
            self.arm()
            self._armed = True
        while not stop.is_set():
            self.tick()
            stop.wait(self._interval)

    def start(self, interval_s: float = 1.0) -> None:
        """Run the tick loop, the watchers and their supervisor in background threads until :meth:`stop`."""
        self._interval = interval_s
        ticker = self._ticker = _Supervised(TICK_KEY, "rf-scheduler-tick", self._tick_loop, self._wake)
        ticker.start()

        def supervise_ticker() -> float | None:
            return self._supervise(ticker)

        def supervise() -> None:  # never dies: every step catches everything
            while not self._stop.is_set():
                self._wake.clear()
                waits = [interval_s]
                for step in (supervise_ticker, self.sync_watchers):
                    try:
                        wait = step()
                    except Exception:
                        log.exception("scheduler: supervising failed (trying again)")
                        continue
                    if wait is not None:
                        waits.append(wait)
                self._wake.wait(min(waits))

        self._thread = threading.Thread(target=supervise, name="rf-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._watchers_lock:
            parts = list(self._watchers.values())
            self._watchers.clear()
        if self._ticker is not None:
            parts.append(self._ticker)
        for part in parts:
            part.stop.set()
        if self._ticker is not None and self._ticker.thread is not None:
            self._ticker.thread.join(timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)
