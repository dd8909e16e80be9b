"""The trigger scheduler: runs inside the server (``rf serve`` / ``rf ui``).

It decides *when* triggers fire; :meth:`TriggersService.fire_trigger` decides
*what* runs (the trigger's environment, that environment's commit). The clock
is injectable and :meth:`Scheduler.tick` does one pass, so tests can walk
through time without sleeping.

- Schedule triggers fire at their cron slots (optionally in a timezone). Each
  handled slot is recorded (``last_scheduled_at``), so a restart does not fire
  a slot twice.
- Missed slots while the server was down are not replayed, unless the trigger
  says ``catch_up = "last"``: then the latest missed slot runs once at start.
- Overlap policy ``skip`` (default): a slot is skipped while the previous run
  of the same trigger is still going.
- Watch triggers: one watchfiles thread per live, enabled trigger; changes
  are debounced and passed to the agent as ``{"changes": [...]}``.
- A paused production trigger (``enabled`` false, set only by a release) is
  neither ticked nor watched; when a release resumes or reschedules it, its
  slots count from then (``last_scheduled_at``), so missed slots never fire.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from rf.ids import parse_iso, utcnow

if TYPE_CHECKING:
    from rf.services import Services

log = logging.getLogger("rf.scheduler")


def latest_slot(schedule: str, timezone: str | None, now: dt.datetime) -> dt.datetime:
    """The newest cron slot at or before ``now`` (naive UTC)."""
    import zoneinfo

    from croniter import croniter

    tz = zoneinfo.ZoneInfo(timezone or "UTC")
    local = (now + dt.timedelta(microseconds=1)).replace(tzinfo=dt.UTC).astimezone(tz)
    prev: dt.datetime = croniter(schedule, local).get_prev(dt.datetime)
    return prev.astimezone(dt.UTC).replace(tzinfo=None)


class Scheduler:
    def __init__(self, services: Services, *, clock: Callable[[], dt.datetime] = utcnow, workers: int = 4,
                 watch_debounce_ms: int = 300) -> None:
        self.services = services
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rf-trigger")
        self._running: dict[str, Future[Any]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchers: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._debounce = watch_debounce_ms
        self.fired: list[tuple[str, dt.datetime]] = []  #: (trigger id, slot) — for tests and `stats`
        self.skipped: list[tuple[str, dt.datetime]] = []

    # ------------------------------------------------------------ schedule
    def _schedule_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.services.store.trigger_rows(live_only=True)
                if r["kind"] == "schedule" and r["enabled"]]

    def arm(self, now: dt.datetime | None = None) -> None:
        """At start: settle slots missed while the server was down (catch_up policy)."""
        now = now or self.clock()
        from rf.services.triggers import next_fire

        for row in self._schedule_rows():
            base = parse_iso(row["last_scheduled_at"] or row["created_at"])
            if next_fire(row["schedule"], row["timezone"], base) > now:
                continue  # nothing missed
            slot = latest_slot(row["schedule"], row["timezone"], now)
            self.services.store.set_trigger_scheduled(row["id"], slot)
            if row["catch_up"] == "last":
                log.info("trigger %s: catching up the missed slot %s", row["id"], slot)
                self._fire(row, slot)

    def tick(self, now: dt.datetime | None = None) -> list[str]:
        """Fire every schedule trigger whose next slot is due; returns their ids."""
        now = now or self.clock()
        from rf.services.triggers import next_fire

        fired = []
        for row in self._schedule_rows():
            base = parse_iso(row["last_scheduled_at"] or row["created_at"])
            nxt = next_fire(row["schedule"], row["timezone"], base)
            if nxt > now:
                continue
            slot = latest_slot(row["schedule"], row["timezone"], now)
            self.services.store.set_trigger_scheduled(row["id"], slot)
            if self._fire(row, slot):
                fired.append(row["id"])
        return fired

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
    def sync_watchers(self) -> None:
        wanted = {r["id"]: r for r in self.services.store.trigger_rows(live_only=True)
                  if r["kind"] == "watch" and r["enabled"]}
        for tid in list(self._watchers):
            if tid not in wanted:
                thread, stop = self._watchers.pop(tid)
                stop.set()
        for tid, row in wanted.items():
            if tid not in self._watchers:
                stop = threading.Event()
                thread = threading.Thread(target=self._watch, args=(row, stop), daemon=True, name=f"rf-watch-{tid}")
                self._watchers[tid] = (thread, stop)
                thread.start()

    def _watch(self, row: dict[str, Any], stop: threading.Event) -> None:
        from watchfiles import watch

        try:
            for changes in watch(row["watch_path"], stop_event=stop, debounce=self._debounce, rust_timeout=500,
                                 yield_on_timeout=False, raise_interrupt=False):
                listed = sorted(({"change": c.name, "path": p} for c, p in changes), key=lambda d: d["path"])
                self._fire(row, self.clock(), {"changes": listed})
        except Exception:
            log.exception("watch trigger %s stopped", row["id"])

    # ------------------------------------------------------------ loop
    def start(self, interval_s: float = 1.0) -> None:
        """Run in a background thread until :meth:`stop`."""
        def loop() -> None:
            try:
                self.arm()
            except Exception:
                log.exception("scheduler: arming failed")
            while not self._stop.is_set():
                try:
                    self.tick()
                    self.sync_watchers()
                except Exception:
                    log.exception("scheduler tick failed")
                self._stop.wait(interval_s)

        self._thread = threading.Thread(target=loop, name="rf-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for _, stop in self._watchers.values():
            stop.set()
        self._watchers.clear()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._executor.shutdown(wait=False, cancel_futures=True)
