"""Replicas on PostgreSQL: endpoint throughput of 1 vs 3 ``rf serve`` on one database, and what
serializing writes across servers costs.

Run: .venv/bin/python bench/replicas.py [--quick] [--duration S] [--rounds R] [--concurrency C]

Needs the PostgreSQL server binaries, as bench/store_pg.py (a throw-away server, ``fsync=off``).

1. **Throughput** — one workspace on one database, the trivial ``echo`` agent in production. First
   one ``rf serve`` under C keep-alive connections, then three (the first plus two replicas)
   with the same C connections split between them (one load generator each, all at once); prints
   requests/s, p50, p99 and the ratio 3/1 per round. On a 2-core machine the three servers, their
   agent workers, the load generators and PostgreSQL all share the same two cores: expect the
   ratio near 1 (what more servers buy there is availability, not speed).
2. **Write lock** — in this process: N small units of work (a prompt draft each) on a
   ``PgStore`` whose writes take the advisory lock (as every server does), against the same
   with only the process's lock: ms per transaction each.

The exit status is 0 unless the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _util as u
import invoke as inv

sys.path.insert(0, str(u.ROOT / "tests"))
sys.path.insert(0, str(u.ROOT))


def start_replica(root: Path, env: dict[str, str], known: set[int], timeout: float = 30.0) -> u.Server:
    """``rf serve --port 0`` in *root* while another runs: waits for its ``.rf/servers/<pid>.json``."""
    proc = subprocess.Popen([u.RF, "serve", "--port", "0"], cwd=root, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    info_file = root / ".rf" / "servers" / f"{proc.pid}.json"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"rf serve (replica) exited with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the replica did not write its file in time")
        try:
            info = json.loads(info_file.read_text())
            break
        except (OSError, ValueError):
            time.sleep(0.05)
    u.wait_healthy(info["url"], "/api/health", deadline, proc)
    known.add(proc.pid)
    return u.Server(proc, info["url"], info["token"])


def throughput(args: argparse.Namespace, dbs: Any, tmp: Path, env: dict[str, str]) -> None:
    root = tmp / "ws"
    u.run([u.RF, "init", str(root)], env=env)
    (root / "rf.toml").write_text((root / "rf.toml").read_text() + dbs.toml(dbs.new("replicas")))
    d = root / "agents" / inv.AGENT
    d.mkdir(parents=True, exist_ok=True)
    for rel, text in inv.AGENT_FILES.items():
        (d / rel).write_text(text)
    u.run([u.RF, "agents", "deploy", inv.AGENT, "-m", "bench"], cwd=root, env=env)
    u.run([u.RF, "agents", "promote", inv.AGENT, "--yes"], cwd=root, env=env)
    first = u.start_rf_server(root, env)
    servers = [first]
    path = f"/production/agents/{inv.AGENT}"
    try:
        known: set[int] = set()
        one = inv.Target("1 server", first, path, "rf")
        three = [inv.Target(f"replica {i}", first, path, "rf") for i in range(3)]
        rows: list[list[str]] = []
        ratios = []
        for r in range(args.rounds):
            if len(servers) == 1:  # the round of one server first, then start the replicas once
                inv.load_once(one, env, args.concurrency, args.warmup, args.duration)
                servers += [start_replica(root, env, known), start_replica(root, env, known)]
                for target, server in zip(three, servers, strict=True):
                    target.server = server
            else:
                inv.load_once(one_again := inv.Target("1 server", first, path, "rf"), env, args.concurrency,
                              args.warmup, args.duration)
                one.round_rps.append(one_again.round_rps[-1])
                one.latencies.extend(one_again.latencies)
            split = [args.concurrency // 3 + (1 if i < args.concurrency % 3 else 0) for i in range(3)]
            threads = [threading.Thread(target=inv.load_once, args=(t, env, max(1, c), args.warmup, args.duration))
                       for t, c in zip(three, split, strict=True)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            total = sum(t.round_rps[-1] for t in three)
            ratios.append(total / one.round_rps[-1] if one.round_rps[-1] else 0.0)
            print(f"round {r + 1}: 1 server {one.round_rps[-1]:.0f} req/s, 3 servers {total:.0f} req/s")
        lat3 = [x for t in three for x in t.latencies]
        rows.append(["1", f"{u.median(one.round_rps):.0f}", inv.fmt_ms(u.percentile(one.latencies, 50)),
                     inv.fmt_ms(u.percentile(one.latencies, 99)), str(one.errors)])
        rows.append(["3", f"{u.median([sum(x) for x in zip(*(t.round_rps for t in three), strict=True)]):.0f}",
                     inv.fmt_ms(u.percentile(lat3, 50)) if lat3 else "-",
                     inv.fmt_ms(u.percentile(lat3, 99)) if lat3 else "-", str(sum(t.errors for t in three))])
        print(u.table(["servers", "req/s", "p50 ms", "p99 ms", "errors"], rows))
        print(f"3 servers / 1 server: {u.median(ratios):.0%} (median of rounds: "
              + ", ".join(f"{x:.0%}" for x in ratios) + ")")
        ok = one.ok_total + sum(t.ok_total for t in three)
        # A server's reads flush its own batching writer, not the other servers': rows another
        # replica still holds show within its writer's linger. Counted until they match (or 10 s).
        waited = time.monotonic()
        while True:
            _total, succeeded = inv.count_executions(first, inv.AGENT)
            if succeeded == ok or time.monotonic() - waited > 10:
                break
            time.sleep(0.2)
        print(f"{succeeded} executions recorded for {ok} successful requests "
              f"({'ok' if succeeded == ok else 'WARN: differs'}; all visible after {time.monotonic() - waited:.1f} s)")
    finally:
        for server in servers:
            server.stop()


def write_lock(args: argparse.Namespace, dbs: Any) -> None:
    import datetime as dt
    import threading as th

    from rf.store.pg import PgStore

    rows = []
    for label, cluster in (("advisory lock (replicas)", True), ("process lock only", False)):
        with PgStore.open(dbs.new("lock"), password_env="TEST_RF_PG_PASSWORD") as store:
            if not cluster:
                store.write_lock = th.RLock()  # type: ignore[assignment]
            now = dt.datetime(2026, 12, 1)
            with store.unit_of_work() as tx:
                tx.prompts.insert_prompt("p", now)
            start = time.perf_counter()
            for _ in range(args.transactions):
                with store.unit_of_work() as tx:
                    tx.prompts.touch_prompt("p", now)
            took = time.perf_counter() - start
            rows.append([label, str(args.transactions), f"{took / args.transactions * 1000:.2f}"])
    print(u.table(["writes", "transactions", "ms each"], rows))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    u.add_round_options(parser, quick="one 3 s round", rounds_help="rounds")
    parser.add_argument("--concurrency", type=int, default=9, help="keep-alive connections in all (default 9)")
    parser.add_argument("--transactions", type=int, default=None, help="units of work timed (default 2,000)")
    args = parser.parse_args(argv)
    u.settle_rounds(args)
    args.transactions = args.transactions or (500 if args.quick else 2000)
    print(f"# rf replicas on PostgreSQL — {time.strftime('%Y-%m-%d %H:%M')} — {u.machine()}")
    print(f"# load: {args.concurrency} keep-alive connections in all, {args.warmup:g} s warm-up +"
          f" {args.duration:g} s measured, {args.rounds} round(s)")
    print(f"# before: {u.load_note()}")
    with u.postgres() as dbs:
        if dbs is None:
            return 1
        with tempfile.TemporaryDirectory(prefix="rf-bench-replicas-") as tmp_name:
            tmp = Path(tmp_name)
            env = u.bench_env(tmp / "pycache")
            print("\n## endpoint throughput (POST /production/agents/echo): 1 vs 3 rf serve on one database\n")
            throughput(args, dbs, tmp, env)
            print("\n## a unit of work with and without the advisory write lock\n")
            write_lock(args, dbs)
    print(f"# after: {u.load_note()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
