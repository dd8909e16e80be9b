"""Retention and ``rf gc``: what rf deletes so a busy workspace stays a few GB.

**Execution history** (executions, their spans, session messages) is kept per
environment (``[retention.ENV]`` in rf.toml): at most ``days`` old and at most the
newest ``max_executions`` (0: no limit of that kind). An execution goes with its spans
and the session messages it wrote; a session whose messages are all gone is gone (a
session is its messages). Executions in progress (a ``running`` marker) are never
collected. The server applies this in the background (:class:`RetentionThread`: shortly
after it starts, then every ``interval_minutes``), in chunks, pausing between them, so a
request never waits for more than one chunk.

**``rf gc``** (:meth:`RetentionService.gc`) does the same, and also removes:

- release plans nobody published, stored eval runs, and the live scores of canaries that
  ended, older than ``[retention] plan_days``;
- commits nothing can reach, older than staging's ``days``: a commit an environment
  points at, one a release published or replaced (rollbacks need it), one a kept plan or
  an execution in progress names, one a live worker runs — and every ancestor of those
  (the agent's history) — is never collected; then blobs that no remaining commit uses;
- stale directories in ``.rf/cache``: ``rf test`` working copies (one per edit) and
  commit directories written for workers, when no live worker runs them, they are over an
  hour old, and (working copies) they are not their agent's newest. Commit directories
  are a cache: one needed again is written again from the store;
- abandoned uploads: pieces of a knowledge-base upload (``.rf/cache/kb-uploads/BATCH``)
  untouched for over an hour, and chunks of a deploy upload (``.rf/uploads``) idle for
  longer than an upload may be (``UPLOAD_IDLE_S``) — a client that went away mid-upload.

Never collected: memory (it is state, not history), release history, credentials,
configuration of any kind. ``rf gc`` deletes history, never configuration: it is
maintenance, not a production change, and it never deletes what a release needs.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rf.ids import utcnow
from rf.models import ENVIRONMENTS, WORKING_COPY, GcFreed, GcResult
from rf.services.base import ServiceContext

if TYPE_CHECKING:
    from rf.config import Workspace
    from rf.services import Services
    from rf.store.retention import Tally

log = logging.getLogger("rf.retention")

#: What a workspace keeps when rf.toml's ``[retention]`` says nothing. A production
#: execution with its spans and session messages is ~1-3 KB in the store (bench/retention.py),
#: so these keep a busy workspace within a few GB.
DEFAULTS: dict[str, Any] = {
    "staging": {"days": 14, "max_executions": 50_000},
    "production": {"days": 90, "max_executions": 1_000_000},
    "interval_minutes": 10,
    "plan_days": 30,
}
#: Executions (with what they wrote) deleted per transaction.
CHUNK = 2000
#: Pause between chunks, so requests waiting for the store's write lock get it.
PAUSE_S = 0.005
#: A cache directory younger than this is never removed (a run may be about to use it).
CACHE_GRACE_S = 3600.0
#: The server's first pass comes this long after it starts (or after the interval, if shorter).
FIRST_PASS_S = 60.0
#: Seconds between the server's passes, overriding ``interval_minutes`` (tests, benchmarks).
INTERVAL_ENV = "RF_RETENTION_INTERVAL_S"

#: Every kind ``rf gc`` reports, in order; the background pass reports the first three.
HISTORY_KINDS = ("executions", "spans", "session_messages")
KINDS = (*HISTORY_KINDS, "release_plans", "eval_runs", "canary_scores", "commits", "blobs", "working_copies",
         "commit_dirs", "upload_spools")


def retention_policy(workspace: Workspace | None) -> dict[str, Any]:
    """rf.toml's ``[retention]`` (checked when the workspace was loaded) over :data:`DEFAULTS`."""
    given: dict[str, Any] = dict(workspace.retention) if workspace is not None else {}
    policy: dict[str, Any] = {}
    for key, default in DEFAULTS.items():
        if isinstance(default, dict):
            policy[key] = {**default, **given.get(key, {})}
        else:
            policy[key] = given.get(key, default)
    return policy


def _add(total: dict[str, tuple[int, int]], more: dict[str, tuple[int, int]]) -> None:
    for kind, (count, size) in more.items():
        was = total.get(kind, (0, 0))
        total[kind] = (was[0] + count, was[1] + size)


class RetentionService:
    """``gc`` (the route and ``rf gc``) and ``apply_retention`` (the server's background pass)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.workspace = ctx.workspace
        self.cache_dir = ctx.cache_dir

    def gc(self, dry_run: bool = False) -> GcResult:
        """Delete execution history beyond the retention, unpublished release plans older than
        ``plan_days``, commits nothing can reach and blobs no commit uses, and stale working
        copies and commit directories; what was freed per kind (``dry_run``: what would be,
        deleting nothing). Never memory, releases or anything a release or environment uses."""
        started = time.perf_counter()
        policy = retention_policy(self.workspace)
        tally = self._collect_history(policy, dry_run)
        now = utcnow()
        store = self.store
        if policy["plan_days"]:
            _add(tally, store.collect_plans(now - _dt.timedelta(days=policy["plan_days"]), dry_run=dry_run))
            _add(tally, store.collect_eval_runs(now - _dt.timedelta(days=policy["plan_days"]), dry_run=dry_run))
            _add(tally, store.collect_canary_scores(now - _dt.timedelta(days=policy["plan_days"]), dry_run=dry_run))
        in_use = self._labels_in_use()
        staging_days = policy["staging"]["days"]
        # (staging's days: unreachable commits are staging history, e.g. of an agent deleted there)
        commits_before = now - _dt.timedelta(days=staging_days) if staging_days else _dt.datetime.min
        freed, _ = store.collect_commits(commits_before, {label for _, label in in_use}, dry_run=dry_run)
        _add(tally, freed)
        _add(tally, self._collect_cache(in_use, dry_run))
        return self._result(tally, policy, dry_run, started, KINDS)

    def apply_retention(self, stop: threading.Event | None = None) -> GcResult:
        """The server's background pass: execution history beyond the retention (see
        :meth:`gc`, which does this and more). Returns early, with what it did, once *stop*
        is set."""
        started = time.perf_counter()
        policy = retention_policy(self.workspace)
        tally = self._collect_history(policy, False, stop)
        return self._result(tally, policy, False, started, HISTORY_KINDS)

    # ------------------------------------------------------------ history
    def _collect_history(self, policy: dict[str, Any], dry_run: bool,
                         stop: threading.Event | None = None) -> Tally:
        store = self.store
        tally: Tally = {}
        now = utcnow()
        for env in ENVIRONMENTS:
            days, keep = policy[env]["days"], policy[env]["max_executions"]
            before = now - _dt.timedelta(days=days) if days else None
            through = store.newest_kept_boundary(env, keep) if keep else None
            after = ""
            while stop is None or not stop.is_set():
                last, freed = store.collect_executions(env, before=before, through_id=through, after_id=after,
                                                       chunk=CHUNK, dry_run=dry_run)
                if last is None:
                    break
                _add(tally, freed)
                after = last
                time.sleep(PAUSE_S)
            if before is not None and (stop is None or not stop.is_set()):
                _add(tally, store.collect_old_rows(env, before, chunk=CHUNK * 10, dry_run=dry_run))
        return tally

    def _result(self, tally: Tally, policy: dict[str, Any], dry_run: bool, started: float,
                kinds: tuple[str, ...]) -> GcResult:
        if not dry_run and any(count for count, _ in tally.values()):
            self.store.checkpoint()  # the freed space is reused from now on
        freed = [GcFreed(kind=k, count=tally.get(k, (0, 0))[0], bytes=tally.get(k, (0, 0))[1]) for k in kinds]
        return GcResult(dry_run=dry_run, freed=freed, bytes=sum(f.bytes for f in freed),
                        store_bytes=self.store.store_bytes(), retention=policy,
                        duration_ms=round((time.perf_counter() - started) * 1000, 1))

    # ------------------------------------------------------------ .rf/cache
    def _labels_in_use(self) -> set[tuple[str, str]]:
        """``(agent, commit id or working-copy:DIGEST)`` of every live worker (none when this
        process never started one)."""
        pool = self.ctx.started_pool
        if pool is None:
            return set()
        out = set()
        for key in pool.stats()["keys"]:
            parts = key.split("/", 2)
            if len(parts) == 3:
                out.add((parts[1], parts[2]))
        return out

    def _collect_cache(self, in_use: set[tuple[str, str]], dry_run: bool) -> Tally:
        """Stale ``rf test`` working copies and commit directories (see the module's doc)."""
        tally: Tally = {}
        heads = {row[key] for row in self.store.agent_rows() for key in ("staging_commit", "production_commit")
                 if row[key]}
        labels = {label for _, label in in_use}
        old = time.time() - CACHE_GRACE_S
        doomed: list[tuple[str, Path]] = []
        copies = self.cache_dir / "working-copy"
        for agent_dir in _subdirs(copies):
            found = sorted(_subdirs(agent_dir), key=_mtime, reverse=True)
            newest = next((d for d in found if not d.name.startswith(".")), None)
            for d in found:
                busy = (agent_dir.name, f"{WORKING_COPY}:{d.name}") in in_use
                if d is not newest and not busy and _mtime(d) < old:
                    doomed.append(("working_copies", d))
        for d in _subdirs(self.cache_dir / "commits"):
            if d.name not in heads and d.name not in labels and _mtime(d) < old:
                doomed.append(("commit_dirs", d))
        # Pieces of a knowledge-base upload whose client went away (a live one touches its
        # directory with every piece), and chunks of a deploy upload past the idle limit.
        for d in _subdirs(self.cache_dir / "kb-uploads"):
            if _tree_mtime(d) < old:
                doomed.append(("upload_spools", d))
        uploads = self.workspace.state_dir / "uploads" if self.workspace is not None else None
        if uploads is not None and uploads.is_dir():
            from rf.services.uploads import UPLOAD_IDLE_S

            idle = time.time() - UPLOAD_IDLE_S
            doomed += [("upload_spools", f) for f in uploads.iterdir()
                       if f.is_file() and not f.is_symlink() and _mtime(f) < idle]
        if not doomed:
            return tally
        from rf.runtime.pool import remove_tree

        # One at a time with the check-and-repair of code directories (AgentsService._ensure_code).
        lock = self.ctx.code_lock
        for kind, d in doomed:
            size = _tree_bytes(d) if d.is_dir() else _size(d)
            if not dry_run:
                with lock:
                    if d.is_dir():
                        remove_tree(d)
                    else:
                        d.unlink(missing_ok=True)
                if d.exists():
                    continue  # could not be removed: not counted
            _add(tally, {kind: (1, size)})
        if not dry_run:
            for agent_dir in _subdirs(copies):
                if not any(agent_dir.iterdir()):
                    agent_dir.rmdir()
        return tally


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _tree_mtime(path: Path) -> float:
    """The newest modification time in a directory and what it directly holds."""
    newest = _mtime(path)
    try:
        for p in path.iterdir():
            newest = max(newest, _mtime(p))
    except OSError:
        pass
    return newest


def _subdirs(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


def _mtime(path: Path) -> float:
    try:
        return path.lstat().st_mtime
    except OSError:
        return 0.0


def _tree_bytes(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass
    return total


class RetentionThread:
    """Applies the retention in the server: a daemon thread, a first pass shortly after
    start, then one every ``interval_minutes`` (``RF_RETENTION_INTERVAL_S`` overrides it in
    seconds; an interval of 0 turns it off). :meth:`stop` ends a pass between two chunks."""

    def __init__(self, services: Services, interval_s: float | None = None) -> None:
        self.services = services
        if interval_s is None:
            interval_s = _interval_s(services.workspace)
        self.interval_s = interval_s
        self.passes = 0  #: passes finished (for tests and logs)
        self.last: GcResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="rf-retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        wait = min(FIRST_PASS_S, self.interval_s)
        while not self._stop.wait(wait):
            wait = self.interval_s
            try:
                result = self.services.apply_retention(self._stop)
            except Exception:
                log.exception("retention pass failed; the next one tries again in %.0f s", self.interval_s)
                continue
            self.passes += 1
            self.last = result
            if result.bytes:
                log.info("retention: deleted %s (%.1f MB) in %.0f ms",
                         ", ".join(f"{f.count} {f.kind}" for f in result.freed if f.count),
                         result.bytes / 1e6, result.duration_ms)


def _interval_s(workspace: Workspace | None) -> float:
    text = os.environ.get(INTERVAL_ENV)
    if text:
        try:
            return max(float(text), 0.0)
        except ValueError:
            log.warning("%s=%r is not a number of seconds; using rf.toml's interval_minutes", INTERVAL_ENV, text)
    return float(retention_policy(workspace)["interval_minutes"]) * 60.0
