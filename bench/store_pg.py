"""The PostgreSQL store vs the DuckDB file: endpoint throughput, and rows/s through the writer.

Run: .venv/bin/python bench/store_pg.py [--quick] [--duration S] [--rounds R] [--concurrency C] [--rows N]

Needs the PostgreSQL server binaries (``initdb``, ``pg_ctl``; as root also ``runuser`` and a
``postgres`` user): it starts a throw-away server as the tests do (tests/pgserver.py:
127.0.0.1, ``fsync=off``; a production server keeps fsync on, so treat the PostgreSQL figures
as an upper bound of what the same machine would give with durable commits).

1. **Endpoint throughput** — two ``rf serve`` in the same run, one per store, each with the
   trivial ``echo`` agent deployed and promoted; the load generator of bench/invoke.py (its
   ``--load`` mode: C keep-alive connections, every answer checked) runs against each in
   turn, D P P D …; prints requests/s, p50, p99 per store and the ratio PostgreSQL/DuckDB
   (median of the rounds' ratios), then checks that each server recorded one production
   execution per successful request. "server cpu s" is the rf process only: with PostgreSQL,
   part of the store's work runs in the PostgreSQL server's own processes (not counted), on
   the same 2 cores.
2. **Writer rows/s** — in this process: N execution rows queued on each store's batching
   writer (rf.store.writer.BatchWriter on DuckDB: JSON text parsed by DuckDB; on PostgreSQL
   rf.store.pg_writer.PgBatchWriter: ``COPY``), timed from the first queued row until
   ``flush()`` returns, and the same for span batches (one row per execution's spans).

The exit status is 0 unless the benchmark cannot run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _util as u
import invoke as inv

sys.path.insert(0, str(u.ROOT / "tests"))
sys.path.insert(0, str(u.ROOT))


def workspace(parent: Path, name: str, env: dict[str, str], store_toml: str) -> Path:
    root = parent / name
    u.run([u.RF, "init", str(root)], env=env)
    (root / "rf.toml").write_text((root / "rf.toml").read_text() + store_toml)
    d = root / "agents" / inv.AGENT
    d.mkdir(parents=True, exist_ok=True)
    for rel, text in inv.AGENT_FILES.items():
        (d / rel).write_text(text)
    u.run([u.RF, "agents", "deploy", inv.AGENT, "-m", "bench"], cwd=root, env=env)
    u.run([u.RF, "agents", "promote", inv.AGENT, "--yes"], cwd=root, env=env)
    return root


def endpoint(args: argparse.Namespace, dbs: Any, tmp: Path, env: dict[str, str]) -> None:
    duck_root = workspace(tmp, "duckdb", env, "")
    pg_root = workspace(tmp, "postgresql", env, dbs.toml(dbs.new("bench")))
    servers = [u.start_rf_server(duck_root, env), u.start_rf_server(pg_root, env)]
    try:
        targets = [inv.Target(name, server, f"/production/agents/{inv.AGENT}", "rf")
                   for name, server in zip(("duckdb", "postgresql"), servers, strict=True)]
        for target in targets:
            status, data = u.request_json(target.server.url, "POST", target.path, inv.request_body("rf"))
            if status != 200 or not inv.body_ok("rf", data):
                raise RuntimeError(f"{target.name} answered {status}: {data}")
            target.ok_total += 1
        for i in range(args.rounds):
            for target in (targets if i % 2 == 0 else targets[::-1]):
                inv.load_once(target, env, args.concurrency, args.warmup, args.duration)
        rows = []
        for t in targets:
            p50 = u.percentile(t.latencies, 50) if t.latencies else 0.0
            p99 = u.percentile(t.latencies, 99) if t.latencies else 0.0
            rows.append([t.name, f"{t.rps:.0f}", inv.fmt_ms(p50), inv.fmt_ms(p99), str(t.errors),
                         f"{t.server_cpu_s:.1f}"])
        print(u.table(["store", "req/s", "p50 ms", "p99 ms", "errors", "server cpu s"], rows))
        duck, pg = targets
        ratios = [b / a for a, b in zip(duck.round_rps, pg.round_rps, strict=True) if a]
        print(f"postgresql/duckdb: {u.median(ratios):.0%} (median of rounds: "
              + ", ".join(f"{r:.0%}" for r in ratios) + ")")
        for t in targets:
            _total, succeeded = inv.count_executions(t.server, inv.AGENT)
            verdict = "ok" if succeeded == t.ok_total else "WARN: differs"
            print(f"{t.name}: {succeeded} executions recorded for {t.ok_total} successful requests ({verdict})")
    finally:
        for server in servers:
            server.stop()


def _execution_row(i: int, now: dt.datetime, width: int) -> tuple[Any, ...]:
    """An executions row as rf.store.executions records one; columns added later (NULL) up to *width*."""
    root = json.dumps(["0" * 32, "1" * 16, 0, 1000, "ok", None, {"commit": "c1"}])
    row = (f"ex_bench{i:012d}", "production", "echo", "c1", "http", "succeeded", '{"n": 42}', '{"n": 42}', None,
           None, None, "", now, now, 1.5, None, root, 0.1, None)
    return row + (None,) * (width - len(row))


def _span_row(i: int) -> tuple[Any, ...]:
    spans = json.dumps([[f"{j:016x}", "1" * 16, "custom", "step", j, j + 10, "ok", None, {"n": j}]
                        for j in range(10)])
    return ("production", "0" * 32, f"ex_bench{i:012d}", "echo", 0, 100, 10, spans)


def writer_rows(args: argparse.Namespace, dbs: Any, tmp: Path) -> None:
    from rf.store import Store
    from rf.store.pg import PgStore

    now = dt.datetime(2026, 12, 1, 12, 0, 0)
    with Store.open(None) as probe:
        width = len(probe.cursor().execute("SELECT * FROM executions LIMIT 0").description or ())
    executions = [_execution_row(i, now, width) for i in range(args.rows)]
    spans = [_span_row(i) for i in range(args.rows)]
    out = []
    stores = (("duckdb", lambda: Store.open(tmp / "writer.duckdb")),
              ("postgresql", lambda: PgStore.open(dbs.new("writer"), password_env="TEST_RF_PG_PASSWORD")))
    for name, opener in stores:
        with opener() as store:
            for table, rows in (("executions", executions), ("span_batches", spans)):
                store.writer.check(table, rows[:1])
                start = time.perf_counter()
                for row in rows:  # one put per row, as request threads do
                    store.writer.put(table, row)
                store.flush()
                took = time.perf_counter() - start
                count = store.query_one(f"SELECT count(*) FROM {table}")
                assert count is not None and int(count[0]) == len(rows), (name, table, count)
                out.append([name, table, str(len(rows)), f"{took:.2f}", f"{len(rows) / took:,.0f}"])
    print(u.table(["store", "table", "rows", "seconds", "rows/s"], out))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    u.add_round_options(parser, quick="one 3 s round per store, 20,000 rows", rounds_help="rounds per store")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections (default 8)")
    parser.add_argument("--rows", type=int, default=None, help="rows per table for the writer (default 100,000)")
    args = parser.parse_args(argv)
    u.settle_rounds(args)
    args.rows = args.rows or (20_000 if args.quick else 100_000)
    print(f"# rf store: PostgreSQL vs DuckDB — {time.strftime('%Y-%m-%d %H:%M')} — {u.machine()}")
    print(f"# load: {args.concurrency} keep-alive connections, {args.warmup:g} s warm-up + {args.duration:g} s"
          f" measured, {args.rounds} round(s) per store; writer: {args.rows:,} rows per table")
    print(f"# before: {u.load_note()}")
    with u.postgres() as dbs:
        if dbs is None:
            return 1
        with tempfile.TemporaryDirectory(prefix="rf-bench-store-pg-") as tmp_name:
            tmp = Path(tmp_name)
            env = u.bench_env(tmp / "pycache")
            print("\n## endpoint throughput (POST /production/agents/echo), one rf serve per store\n")
            endpoint(args, dbs, tmp, env)
            print("\n## batching writer, rows/s (DuckDB: JSON text; PostgreSQL: COPY)\n")
            writer_rows(args, dbs, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
