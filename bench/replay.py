#!/usr/bin/env python3
"""Benchmark: replaying recorded production executions on staging (``rf replay``).

Builds a throw-away workspace with a trivial agent (it returns its input), deployed and
promoted, and records N production executions of it (default 1,000; a tenth of them with a
session, two turns each, so session histories are replayed too). Then, in-process (no CLI
start-up, the same ``Services.replay`` that ``rf replay`` and ``POST /api/agents/NAME/replay``
call):

- ``replay(agent, last=N)``: selecting the executions, reading their recorded connector calls
  and session histories, running each input again on staging (source ``replay``) through the
  real worker pool, and comparing: wall time, executions/s (target >= 100/s);
- the process's peak memory (RSS high-water mark) during the replay, above what it used
  before it, and the Python heap's peak (tracemalloc) in a second, traced run.

Exit status is always 0; a missed target prints a WARN line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rf.config import init_workspace
from rf.services import Services
from rf.store import Store

TARGET_PER_S = 100.0
TOML = 'description = "trivial"\nentrypoint = "agent:handle"\ntimeout_s = 30\n'
TRIVIAL = "def handle(input, ctx):\n    return input\n"


def rss_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (the high-water mark) of this process, in KiB (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak() -> bool:
    """Reset this process's RSS high-water mark (Linux: /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def record(services: Services, count: int, threads: int) -> None:
    """*count* production executions: one in ten a two-turn session, the rest plain."""
    todo = list(range(count))
    lock = threading.Lock()
    errors: list[str] = []

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                n = todo.pop()
            session = f"s-{n // 2}" if n % 20 in (0, 1) else None
            ex = services.invoke("production", "trivial", {"n": n, "message": f"hi {n}"}, session, "endpoint")
            if ex.status != "succeeded":
                errors.append(ex.error or "failed")

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    if errors:
        raise RuntimeError(f"recording failed: {errors[0]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executions", type=int, default=1000, help="recorded production executions to replay")
    parser.add_argument("--threads", type=int, default=3, help="threads that record the production executions")
    parser.add_argument("--quick", action="store_true", help="200 executions")
    args = parser.parse_args()
    count = 200 if args.quick else args.executions
    tmp = Path(tempfile.mkdtemp(prefix="rf-bench-replay-"))
    os.environ.setdefault("XDG_DATA_HOME", str(tmp / "data"))
    print(f"rf replay benchmark · {os.cpu_count()} CPUs · load average {os.getloadavg()[0]:.1f} · "
          f"Python {sys.version.split()[0]}")
    try:
        from rf.runtime.pool import WorkerPool

        ws = init_workspace(tmp / "ws")
        store = Store.open(ws.db_path)
        services = Services(store, ws, pool=WorkerPool(max_workers_per_key=4))
        services.deploy("trivial", {"agent.toml": TOML.encode(), "agent.py": TRIVIAL.encode()}, "bench", "bench")
        services.promote("trivial", "bench")
        t0 = time.perf_counter()
        record(services, count, args.threads)
        print(f"recorded {count} production executions in {time.perf_counter() - t0:.1f} s "
              f"({count // 10} of them session turns)")
        services.replay("trivial", last=min(count, 20))  # warm: staging's workers started, caches filled
        rows = []
        rss_before = rss_kib("VmRSS")
        peak_ok = reset_peak()
        t0 = time.perf_counter()
        result = services.replay("trivial", last=count)
        wall = time.perf_counter() - t0
        peak = rss_kib("VmHWM")
        rate = result.total / wall
        rows.append(("replay (untraced)", f"{result.total}", f"{wall:.2f} s", f"{rate:.0f}/s",
                     f"{(peak - rss_before) / 1024:.1f} MiB" if peak_ok else "n/a"))
        if result.total != count or result.same != count:
            raise RuntimeError(f"expected {count} same executions, got {result.total} total, {result.same} same")
        tracemalloc.start()
        t0 = time.perf_counter()
        traced = services.replay("trivial", last=count)
        traced_wall = time.perf_counter() - t0
        _, heap_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(("replay (tracemalloc on)", f"{traced.total}", f"{traced_wall:.2f} s",
                     f"{traced.total / traced_wall:.0f}/s", f"heap peak {heap_peak / 2**20:.1f} MiB"))
        widths = [max(len(r[i]) for r in [("run", "executions", "wall", "executions/s", "memory"), *rows])
                  for i in range(5)]
        for row in [("run", "executions", "wall", "executions/s", "memory"), *rows]:
            print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                                strict=True))))
        print(f"(memory: the host process's RSS high-water mark during the replay above its RSS before it, "
              f"{rss_before / 1024:.0f} MiB; the {result.workers} staging worker processes run apart)")
        verdict = "PASS" if rate >= TARGET_PER_S else "WARN"
        print(f"{verdict}: replay of {result.total} recorded production executions at {rate:.0f} executions/s "
              f"(target >= {TARGET_PER_S:.0f}/s), {result.workers} at a time")
        services.close()
        store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
