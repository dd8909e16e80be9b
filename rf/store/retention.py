"""SQL for retention: deleting old execution history, unpublished release plans, and
commits and blobs nothing can reach (rf.services.retention decides what and when).

Every delete runs in :meth:`Store.transaction` (so it is serialized with deploys and
releases by ``write_lock``) and in chunks: one transaction removes at most ``chunk``
executions with what they wrote, so a request waiting for the lock waits for one chunk,
not for the whole pass. The batching writer (rf.store.writer) only *appends* to these
tables (its only deletes are ``running_executions`` markers, which retention never
touches), and DuckDB does not make an append conflict with a delete of other rows:
the two never fight, and the writer does not take ``write_lock``.

A dry run goes through the same chunks and the same counts, and deletes nothing.
Counts and bytes come back as :data:`Tally` values: ``{kind: (count, bytes)}``, where
bytes are the stored text of the rows (or a blob's size): what the deletes free inside
the database file, whose size DuckDB reuses for new rows rather than giving back.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from rf.ids import micros_of

if TYPE_CHECKING:
    from pathlib import Path

    import duckdb

#: ``{kind: (count, bytes)}`` of what a step freed (or would free).
Tally = dict[str, tuple[int, int]]

#: Slack around an execution's times when looking for the rows it wrote: they all lie
#: within [started_at, ended_at] (the bound only lets DuckDB skip row groups).
_SLACK = _dt.timedelta(minutes=1)

#: The stored text of an execution row (what deleting it frees, roughly).
_EXECUTION_BYTES = ("coalesce(strlen(input), 0) + coalesce(strlen(output), 0) + coalesce(strlen(error), 0)"
                    " + coalesce(strlen(traceback), 0) + coalesce(strlen(logs), 0) + coalesce(strlen(root_span), 0)"
                    " + 120")


def add(total: Tally, more: Tally) -> None:
    """Add *more* to *total* (in place)."""
    for kind, (count, size) in more.items():
        was = total.get(kind, (0, 0))
        total[kind] = (was[0] + count, was[1] + size)


class RetentionMixin:
    """Mixed into :class:`rf.store.Store`."""

    path: Path | None

    def cursor(self) -> duckdb.DuckDBPyConnection:  # provided by Store
        raise NotImplementedError

    def flush(self) -> None:  # provided by Store
        raise NotImplementedError

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:  # provided by Store
        raise NotImplementedError
        yield  # pragma: no cover

    @contextlib.contextmanager
    def _deleting(self, dry_run: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A transaction that deletes, or (dry run) this thread's cursor that only reads."""
        if dry_run:
            yield self.cursor()
        else:
            with self.transaction() as cur:
                yield cur

    # ------------------------------------------------------------ executions
    def newest_kept_boundary(self, env: str, keep: int) -> str | None:
        """The id of *env*'s newest execution beyond the newest *keep* ones (it and every
        older id go), or None when there are at most *keep*. Ids sort by start time."""
        self.flush()
        row = self.cursor().execute(
            "SELECT id FROM executions WHERE env = ? ORDER BY id DESC LIMIT 1 OFFSET ?", [env, keep]).fetchone()
        return str(row[0]) if row else None

    def collect_executions(self, env: str, *, before: _dt.datetime | None, through_id: str | None,
                           after_id: str, chunk: int, dry_run: bool) -> tuple[str | None, Tally]:
        """One chunk: up to *chunk* of *env*'s executions (ids above *after_id*, in id order)
        that started before *before* or whose id is at most *through_id*, with their spans and
        session messages. Executions still running (a ``running`` marker) are never among
        them. Returns the chunk's last id (None: nothing left) and what it freed."""
        if before is None and through_id is None:
            return None, {}
        conditions: list[str] = []
        params: list[Any] = []
        if before is not None:
            conditions.append("started_at < ?")
            params.append(before)
        if through_id is not None:
            conditions.append("id <= ?")
            params.append(through_id)
        with self._deleting(dry_run) as cur:
            rows = cur.execute(
                f"""SELECT id, started_at, ended_at, {_EXECUTION_BYTES} FROM executions
                    WHERE env = ? AND id > ? AND ({' OR '.join(conditions)})
                      AND id NOT IN (SELECT id FROM running_executions)
                    ORDER BY id LIMIT ?""",
                [env, after_id, *params, chunk]).fetchall()
            if not rows:
                return None, {}
            ids = [r[0] for r in rows]
            lo = min(r[1] for r in rows) - _SLACK
            hi = max(r[2] for r in rows) + _SLACK
            lo_ns, hi_ns = micros_of(lo) * 1000, micros_of(hi) * 1000
            tally: Tally = {"executions": (len(rows), sum(int(r[3]) for r in rows))}
            # What each table holds of these executions: (table, time condition, its bounds, count, bytes).
            children = (
                ("span_batches", "start_ns BETWEEN ? AND ?", (lo_ns, hi_ns), "sum(count)", "sum(strlen(spans) + 100)",
                 "spans"),
                ("session_turns", "started_at BETWEEN ? AND ?", (lo, hi), "sum(count)", "sum(strlen(messages) + 100)",
                 "session_messages"),
            )
            for table, when, bounds, count, size, kind in children:
                where = f"env = ? AND execution_id IN (SELECT unnest(?::VARCHAR[])) AND {when}"
                args = [env, ids, *bounds]
                found = cur.execute(f"SELECT coalesce({count}, 0), coalesce({size}, 0) FROM {table} WHERE {where}",
                                    args).fetchone()
                if found and found[0]:
                    add(tally, {kind: (int(found[0]), int(found[1]))})
                    if not dry_run:
                        cur.execute(f"DELETE FROM {table} WHERE {where}", args)
            if not dry_run:
                cur.execute("DELETE FROM executions WHERE env = ? AND id IN (SELECT unnest(?::VARCHAR[]))", [env, ids])
        return ids[-1], tally

    def collect_old_rows(self, env: str, before: _dt.datetime, *, chunk: int, dry_run: bool) -> Tally:
        """Spans and session messages of *env* that ended before *before* and whose execution
        has no row (any more): what :meth:`collect_executions` did not reach. Never those of an
        execution in progress."""
        before_ns = micros_of(before) * 1000
        tables = (
            ("span_batches", "end_ns < ?", before_ns, "sum(count)", "sum(strlen(spans) + 100)", "spans"),
            ("session_turns", "ended_at < ?", before, "sum(count)", "sum(strlen(messages) + 100)", "session_messages"),
        )
        tally: Tally = {}
        self.flush()
        orphan = ("(execution_id IS NULL OR (execution_id NOT IN (SELECT id FROM executions WHERE env = ?)"
                  " AND execution_id NOT IN (SELECT id FROM running_executions)))")
        for table, when, bound, count, size, kind in tables:
            where = f"env = ? AND {when} AND {orphan}"
            if dry_run:
                found = self.cursor().execute(
                    f"SELECT coalesce({count}, 0), coalesce({size}, 0) FROM {table} WHERE {where}", [env, bound, env]
                ).fetchone()
                if found and found[0]:
                    add(tally, {kind: (int(found[0]), int(found[1]))})
                continue
            while True:
                with self.transaction() as cur:
                    picked = f"SELECT rowid FROM {table} WHERE {where} LIMIT {int(chunk)}"
                    found = cur.execute(
                        f"SELECT count(*), coalesce({count}, 0), coalesce({size}, 0) FROM {table}"
                        f" WHERE rowid IN ({picked})", [env, bound, env]).fetchone()
                    rows = int(found[0]) if found else 0
                    if rows:
                        add(tally, {kind: (int(found[1]), int(found[2]))})  # type: ignore[index]
                        cur.execute(f"DELETE FROM {table} WHERE rowid IN ({picked})", [env, bound, env])
                if rows < chunk:
                    break
        return tally

    # ------------------------------------------------------------ release plans
    def collect_plans(self, before: _dt.datetime, *, dry_run: bool) -> Tally:
        """Release plans made before *before* that no release published."""
        where = "created_at < ? AND id NOT IN (SELECT plan_id FROM releases)"
        with self._deleting(dry_run) as cur:
            found = cur.execute(f"SELECT count(*), coalesce(sum(strlen(items) + 60), 0) FROM release_plans WHERE {where}",
                                [before]).fetchone()
            if not found or not found[0]:
                return {}
            if not dry_run:
                cur.execute(f"DELETE FROM release_plans WHERE {where}", [before])
                # a deleted plan's author and approvals go with it
                for table in ("plan_approvals", "plan_authors"):
                    cur.execute(f"DELETE FROM {table} WHERE plan_id NOT IN (SELECT id FROM release_plans)")
        return {"release_plans": (int(found[0]), int(found[1]))}

    def collect_eval_runs(self, before: _dt.datetime, *, dry_run: bool) -> Tally:
        """Stored eval runs made before *before* (a release keeps its own gate evidence)."""
        with self._deleting(dry_run) as cur:
            found = cur.execute("SELECT count(*), coalesce(sum(strlen(result) + 80), 0) FROM eval_runs "
                                "WHERE created_at < ?", [before]).fetchone()
            if not found or not found[0]:
                return {}
            if not dry_run:
                cur.execute("DELETE FROM eval_runs WHERE created_at < ?", [before])
        return {"eval_runs": (int(found[0]), int(found[1]))}

    def collect_canary_scores(self, before: _dt.datetime, *, dry_run: bool) -> Tally:
        """The live scores of canaries that ended before *before* (their figures stay in the
        canary's row and its release; a running canary keeps every score)."""
        ended = "canary_id IN (SELECT id FROM canaries WHERE ended_at IS NOT NULL AND ended_at < ?)"
        with self._deleting(dry_run) as cur:
            found = cur.execute("SELECT count(*), coalesce(sum(strlen(scores) + 120), 0) FROM canary_scores "
                                f"WHERE {ended}", [before]).fetchone()
            if not found or not found[0]:
                return {}
            if not dry_run:
                cur.execute(f"DELETE FROM canary_scores WHERE {ended}", [before])
        return {"canary_scores": (int(found[0]), int(found[1]))}

    # ------------------------------------------------------------ commits and blobs
    def collect_commits(self, before: _dt.datetime, keep: Iterable[str], *, dry_run: bool) -> tuple[Tally, set[str]]:
        """Commits made before *before* that nothing can reach, then blobs no commit uses.

        Reachable (kept, with every ancestor: an agent's history) is a commit an environment
        points at, one a release (or a rollback) published or replaced, one a kept release
        plan names, one an execution in progress runs, and those in *keep* (the caller's:
        commits a live worker runs). What is left is history nothing leads to any more (an
        agent deleted in staging that production never ran, say), old enough to go.
        Returns what was freed and the ids of the commits that remain."""
        with self._deleting(dry_run) as cur:
            commits = cur.execute(
                "SELECT id, parent, created_at, tree, strlen(tree) + strlen(config) + strlen(message) + 200"
                " FROM commits").fetchall()
            roots = set(keep)
            roots.update(r[0] for r in cur.execute("SELECT commit_id FROM agent_heads").fetchall())
            roots.update(r[0] for r in cur.execute("SELECT DISTINCT commit_id FROM running_executions").fetchall())
            for before_json, after_json in cur.execute(
                    "SELECT before, after FROM release_items WHERE kind = 'agent'").fetchall():
                roots.update(_commit_ids(before_json, after_json))
            for (items,) in cur.execute("SELECT items FROM release_plans").fetchall():
                for item in _json_list(items):
                    if isinstance(item, dict) and item.get("kind") == "agent":
                        roots.update(v for v in (item.get("before"), item.get("after")) if isinstance(v, str))
            parents = {r[0]: r[1] for r in commits}
            reachable: set[str] = set()
            for root in roots:
                at: str | None = root
                while at is not None and at not in reachable and at in parents:
                    reachable.add(at)
                    at = parents[at]
            doomed = [r for r in commits if r[0] not in reachable and r[2] < before]
            tally: Tally = {}
            if doomed:
                tally["commits"] = (len(doomed), sum(int(r[4]) for r in doomed))
            gone = {r[0] for r in doomed}
            used: set[str] = set()
            readable = True
            for r in commits:
                if r[0] not in gone:
                    tree = _tree_blobs(r[3])
                    readable = readable and tree is not None
                    used.update(tree or ())
            # A tree that cannot be read might use any blob: then none goes.
            blobs = [(sha, size) for sha, size in cur.execute("SELECT sha256, size FROM blobs").fetchall()
                     if sha not in used] if readable else []
            if blobs:
                tally["blobs"] = (len(blobs), sum(int(size) for _, size in blobs))
            if not dry_run:
                if gone:
                    cur.execute("DELETE FROM commits WHERE id IN (SELECT unnest(?::VARCHAR[]))", [sorted(gone)])
                if blobs:
                    cur.execute("DELETE FROM blobs WHERE sha256 IN (SELECT unnest(?::VARCHAR[]))",
                                [[sha for sha, _ in blobs]])
        return tally, {r[0] for r in commits} - gone

    # ------------------------------------------------------------ the file
    def store_bytes(self) -> int:
        """The database file's size (with its write-ahead log), 0 in memory."""
        if self.path is None:
            return 0
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + ".wal")):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def checkpoint(self) -> None:
        """Write the WAL into the file, so the space of deleted rows can be used again (best
        effort: DuckDB refuses while another transaction writes; the next one will do)."""
        with contextlib.suppress(Exception):
            self.cursor().execute("CHECKPOINT")


def _json_list(text: str | None) -> list[Any]:
    try:
        value = json.loads(text) if text else []
    except ValueError:
        return []
    return value if isinstance(value, list) else []


def _commit_ids(*texts: str | None) -> list[str]:
    """The commit ids among release item states (JSON: a commit id, or null)."""
    out = []
    for text in texts:
        try:
            value = json.loads(text) if text else None
        except ValueError:
            continue
        if isinstance(value, str):
            out.append(value)
    return out


def _tree_blobs(tree: str) -> list[str] | None:
    """The blob hashes of a commit's tree (JSON ``{path: sha256}``); None if it cannot be read."""
    try:
        value = json.loads(tree)
    except ValueError:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return None
    return list(value.values())
