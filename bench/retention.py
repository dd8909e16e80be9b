"""Retention benchmark: how big the store grows after N executions, without and with retention.

Run: .venv/bin/python bench/retention.py [--n 200000] [--span-days 60] [--days 14]
                                         [--max-executions N/4] [--passes 10] [--spans 5]

Two throw-away workspaces get the same N production executions (default 200,000), in
time order over the last ``--span-days`` days, through the store's batching writer as a
server records them: each execution row with its root span, one ``span_batches`` row of
``--spans`` child spans, and a session turn (input and reply) in one of 1,000 sessions.

- **without retention**: ``[retention.production] days = 0, max_executions = 0`` (keep
  everything);
- **with retention**: ``days = --days`` and ``max_executions = --max-executions``; the
  background pass (``Services.apply_retention``, what the server runs every
  ``interval_minutes``) runs ``--passes`` times while the executions arrive, and
  ``rf gc``'s full pass once at the end.

Printed for each: the store file's size (MB, after a CHECKPOINT), executions kept, and
(with retention) what the passes deleted, how long they took, and the longest wait for the
store's write lock seen by a thread that takes it every 5 ms meanwhile (what a deploy or a
release would wait at worst). DuckDB does not shrink its file: the space of deleted rows is
reused for new ones, so with retention the file stops growing once the kept history fills it.

The default takes about 40 s on 2 cores. A million executions (``--n 1000000``, e.g. with
``--max-executions 250000``) takes about five times as long (3-4 minutes; recording them is
most of it) and under 1 GB of disk for the run without retention.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rf.config import init_workspace, load_workspace  # noqa: E402
from rf.ids import _b32, iso, micros_of, utcnow  # noqa: E402
from rf.models import Execution  # noqa: E402

BATCH = 2000  #: executions queued between two flushes of the writer


def _id_at(when: dt.datetime, rng: random.Random) -> str:
    ms = int(when.replace(tzinfo=dt.UTC).timestamp() * 1000)
    return f"ex_{_b32(ms, 9)}{_b32(rng.getrandbits(60), 12)}"


def generate(services: Any, start: int, stop: int, n: int, span_days: float, spans: int, rng: random.Random) -> None:
    """Executions number *start* .. *stop* - 1 of *n*, spread evenly over the last *span_days*."""
    store = services.store
    now = utcnow()
    first = now - dt.timedelta(days=span_days)
    step = dt.timedelta(days=span_days) / n
    payload = "x" * 120
    for number in range(start, stop):
        when = first + step * number
        ended = when + dt.timedelta(milliseconds=250)
        start_ns, end_ns = micros_of(when) * 1000, micros_of(ended) * 1000
        ex_id = _id_at(when, rng)
        trace_id = f"{rng.getrandbits(128):032x}"
        session = f"s-{number % 1000}"
        root = json.dumps([trace_id, f"{rng.getrandbits(64):016x}", start_ns, end_ns, "ok", None,
                           {"commit": "c0ffee", "source": "endpoint", "session_id": session}])
        ex = Execution(id=ex_id, env="production", agent="support", commit="c0ffee", source="endpoint",
                       status="succeeded", input={"message": f"question {number} {payload}"},
                       output={"message": f"answer {number} {payload}"}, started_at=iso(when), ended_at=iso(ended),
                       duration_ms=250.0, session_id=session)
        children = [[f"{rng.getrandbits(64):016x}", None, "llm", f"step {i}", start_ns + i * 1000,
                     start_ns + i * 1000 + 500, "ok", None, {"model": "mock", "tokens": 42, "i": i}]
                    for i in range(spans)]
        messages = json.dumps([["user", f"question {number} {payload}", micros_of(when)],
                               ["assistant", f"answer {number} {payload}", micros_of(ended)]])
        writer = store.writer
        writer.begin_group()
        try:
            store.record_execution(ex, when, ended, root)
            if spans:
                store.queue_span_batch("production", trace_id, ex_id, "support", start_ns, end_ns, spans,
                                       json.dumps(children))
            store.queue_session_turn(("production", "support", session, number * 2, 2, ex_id, when, ended, messages))
        finally:
            writer.end_group()
        if (number + 1) % BATCH == 0:
            store.flush()
    store.flush()


class LockProbe:
    """Takes the store's write lock every 5 ms and keeps the longest wait."""

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LockProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            t0 = time.perf_counter()
            with self.lock:
                pass
            self.longest = max(self.longest, time.perf_counter() - t0)


def run(label: str, root: Path, args: argparse.Namespace, retention: bool) -> dict[str, Any]:
    from rf.services import Services
    from rf.store import Store

    init_workspace(root)
    days, most = (args.days, args.max_executions) if retention else (0, 0)
    with (root / "rf.toml").open("a") as f:
        f.write(f"\n[retention.production]\ndays = {days}\nmax_executions = {most}\n")
    ws = load_workspace(root)
    store = Store.open(ws.db_path)
    services = Services(store, ws)
    rng = random.Random(7)
    passes = max(args.passes, 1) if retention else 1
    bounds = [round(args.n * (i + 1) / passes) for i in range(passes)]
    started = time.perf_counter()
    deleted = {"executions": 0, "spans": 0, "session_messages": 0}
    retention_s = 0.0
    slowest_pass = 0.0
    longest_wait = 0.0
    done = 0
    try:
        for bound in bounds:
            generate(services, done, bound, args.n, args.span_days, args.spans, rng)
            done = bound
            if retention:
                with LockProbe(store.write_lock) as probe:
                    result = services.apply_retention()
                longest_wait = max(longest_wait, probe.longest)
                retention_s += result.duration_ms / 1000
                slowest_pass = max(slowest_pass, result.duration_ms / 1000)
                for f in result.freed:
                    deleted[f.kind] = deleted.get(f.kind, 0) + f.count
        if retention:
            final = services.gc()
            retention_s += final.duration_ms / 1000
            for f in final.freed:
                deleted[f.kind] = deleted.get(f.kind, 0) + f.count
        total_s = time.perf_counter() - started
        store.checkpoint()
        kept = store.count_executions("production")
        size = store.store_bytes()
    finally:
        services.close()
        store.close()
    out = {"label": label, "mb": size / 1e6, "kept": kept, "seconds": total_s, "retention_s": retention_s,
           "slowest_pass_s": slowest_pass, "longest_lock_wait_ms": longest_wait * 1000, "deleted": deleted}
    print(f"{label:<18} {size / 1e6:9.1f} MB  {kept:>9,} executions kept  ({total_s:.0f} s)", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=200_000, help="executions to record (default 200,000)")
    p.add_argument("--span-days", type=float, default=60.0, help="they started over this many days (default 60)")
    p.add_argument("--days", type=int, default=14, help="retention: days kept (default 14)")
    p.add_argument("--max-executions", type=int, default=None, help="retention: newest kept (default N/4)")
    p.add_argument("--passes", type=int, default=10, help="background passes while they arrive (default 10)")
    p.add_argument("--spans", type=int, default=5, help="child spans per execution (default 5)")
    args = p.parse_args()
    if args.max_executions is None:
        args.max_executions = max(args.n // 4, 1)
    print(f"{args.n:,} production executions over {args.span_days:g} days ({args.spans} child spans and 2 session "
          f"messages each); retention: {args.days} days, newest {args.max_executions:,}, {args.passes} passes",
          flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="rf-bench-retention-"))
    try:
        without = run("without retention", tmp / "without", args, retention=False)
        with_ = run("with retention", tmp / "with", args, retention=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    per = without["mb"] * 1e6 / max(args.n, 1)
    print(f"\nper execution without retention: {per / 1000:.2f} KB in the store")
    print(f"with retention: {with_['mb']:.1f} MB vs {without['mb']:.1f} MB "
          f"({with_['mb'] / max(without['mb'], 1e-9):.0%}); deleted {with_['deleted']['executions']:,} executions, "
          f"{with_['deleted']['spans']:,} spans, {with_['deleted']['session_messages']:,} session messages")
    print(f"retention passes: {with_['retention_s']:.1f} s in all, slowest {with_['slowest_pass_s']:.2f} s; "
          f"longest wait for the write lock meanwhile: {with_['longest_lock_wait_ms']:.0f} ms")


if __name__ == "__main__":
    main()
