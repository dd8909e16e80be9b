"""Endpoint throughput with a canary release running vs without, on the same `rf serve`.

Run: .venv/bin/python bench/canary.py [--quick] [--duration S] [--concurrency C] [--rounds R]

One real ``rf serve --port 0`` in a throw-away workspace: the trivial ``echo`` agent of
bench/invoke.py, deployed and promoted, and a second commit of it (same behaviour, one
comment more) in staging. The same load generator as bench/invoke.py (its ``--load`` mode:
C asyncio tasks, one keep-alive connection each, every answer checked) sends
``POST /production/agents/echo`` without a session (each request draws its arm), in rounds
*plain canary canary plain …*: before a *canary* round the staging commit starts as a canary
on ``--weight`` % of production (``POST /api/releases/publish`` with ``canary``), before a
*plain* round it is aborted (``POST /api/releases/canary/abort``). So both are measured on the
same server, the same warm workers of the stable commit, back to back.

Prints requests/s, p50 and p99 of both, and the ratio canary/plain (the median of the rounds'
paired ratios; target ≥ 95 %: the arm decision and the state resolution add no store read per
request). Afterwards it checks that every successful request is recorded as a production
execution and that the canary arm took about its weight of the canary rounds' executions. A
missed target prints a WARN line; the exit status stays 0 (1 only if the benchmark cannot run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import _util as u
import invoke as inv

RATIO_TARGET = 0.95
CANARY_FILES = {**inv.AGENT_FILES, "agent.py": inv.AGENT_FILES["agent.py"] + "# the canary's commit\n"}


def set_canary(server: u.Server, on: bool, weight: float) -> None:
    if on:
        status, data = u.request_json(server.url, "POST", "/api/releases/publish",
                                      {"items": [f"agent:{inv.AGENT}"], "canary": weight,
                                       "message": "bench canary"}, server.token)
    else:
        status, data = u.request_json(server.url, "POST", "/api/releases/canary/abort",
                                      {"message": "bench round over"}, server.token)
    if status != 200:
        raise RuntimeError(f"{'starting' if on else 'aborting'} the canary answered {status}: {data}")


def arm_counts(server: u.Server) -> dict[str, int]:
    """Production executions of the echo agent per arm (``none``: no canary ran)."""
    counts: dict[str, int] = {}
    before = ""
    for _ in range(100):
        path = f"/api/executions?env=production&agent={inv.AGENT}&limit=10000" + (f"&before={before}" if before else "")
        status, rows = u.request_json(server.url, "GET", path, token=server.token)
        if status != 200:
            raise RuntimeError(f"listing executions answered {status}: {rows}")
        for row in rows:
            if row["status"] == "succeeded":
                counts[row.get("arm") or "none"] = counts.get(row.get("arm") or "none", 0) + 1
        if len(rows) < 10000:
            break
        before = rows[-1]["id"]
    return counts


def orchestrate(args: argparse.Namespace) -> int:
    duration = args.duration if args.duration is not None else (3.0 if args.quick else 6.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    rounds = max(1, args.rounds if args.rounds is not None else (1 if args.quick else 5))
    concurrency = max(1, args.concurrency)
    print(f"# rf endpoint throughput with a canary release — {time.strftime('%Y-%m-%d %H:%M')} — {u.machine()}")
    print(f"# load: {concurrency} keep-alive connections, {warmup:g} s warm-up + {duration:g} s measured, "
          f"{rounds} round(s) each, canary on {args.weight:g} % of production, no session (each request draws)")
    print(f"# before: {u.load_note()}")
    with tempfile.TemporaryDirectory(prefix="rf-bench-canary-") as tmp_name:
        tmp = Path(tmp_name)
        env = u.bench_env(tmp / "pycache")
        root = u.make_workspace(tmp, env, agents={inv.AGENT: inv.AGENT_FILES}, promote=[inv.AGENT],
                                deploy_hello=False)
        for rel, text in CANARY_FILES.items():
            (root / "agents" / inv.AGENT / rel).write_text(text)
        u.run([u.RF, "agents", "deploy", inv.AGENT, "-m", "the canary"], cwd=root, env=env)
        server = u.start_rf_server(root, env)
        path = f"/production/agents/{inv.AGENT}"
        plain = inv.Target("plain", server, path, "rf")
        canary = inv.Target("canary", server, path, "rf")
        on = False
        try:
            for target, state in ((plain, False), (canary, True)):  # start both arms' workers
                if state != on:
                    set_canary(server, state, args.weight)
                    on = state
                for _ in range(20):
                    status, data = u.request_json(server.url, "POST", path, inv.request_body("rf"))
                    if status != 200 or not inv.body_ok("rf", data):
                        raise RuntimeError(f"{target.name} answered {status}: {data}")
                    target.ok_total += 1
            for i in range(rounds):
                for target in (plain, canary) if i % 2 == 0 else (canary, plain):
                    want = target is canary
                    if want != on:
                        set_canary(server, want, args.weight)
                        on = want
                    inv.load_once(target, env, concurrency, warmup, duration)
            if on:
                set_canary(server, False, args.weight)
            counts = arm_counts(server)
        finally:
            server.stop()
    print(f"# after: {u.load_note(flag_busy=False)}")
    rows = [[t.name, f"{t.rps:.0f}", inv.fmt_ms(u.percentile(t.latencies, 50)),
             inv.fmt_ms(u.percentile(t.latencies, 99)), str(len(t.latencies)), str(t.errors),
             f"{t.server_cpu_s / t.window_s:.0%}" if t.window_s else "-"] for t in (plain, canary)]
    print()
    print(u.table(["production", "req/s", "p50 ms", "p99 ms", "requests", "errors", "server CPU"], rows))
    print()
    ok = True
    for t in (plain, canary):
        if t.errors:
            ok = False
            print(f"WARN: {t.errors} failed request(s) with {t.name}, e.g. {t.error_samples[:2]}")
    ok = inv.report_ratio("canary/plain throughput", canary, plain, RATIO_TARGET) and ok
    sent = plain.ok_total + canary.ok_total
    recorded = sum(counts.values())
    if recorded == sent:
        print(f"PASS: production executions recorded = {sent} = successful requests sent")
    else:
        ok = False
        print(f"WARN: production executions recorded = {recorded} ({counts}), successful requests sent = {sent}")
    armed = counts.get("stable", 0) + counts.get("canary", 0)
    share = counts.get("canary", 0) / armed if armed else 0.0
    print(f"INFO: executions per arm {counts}; the canary arm took {share:.1%} of the canary rounds' "
          f"(weight {args.weight:g} %)")
    if armed and abs(share * 100 - args.weight) > 5:
        ok = False
        print(f"WARN: the canary arm's share {share:.1%} is far from its weight {args.weight:g} %")
    if not ok:
        print("(some figures missed their target; see the WARN lines above)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one 3 s round each (about 25 s in all)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per round (default 6, quick 3)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per round (default 2, quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds each (default 5, quick 1)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent keep-alive connections (default 8)")
    parser.add_argument("--weight", type=float, default=50.0, help="the canary's share of production, %% (default 50)")
    args = parser.parse_args(argv)
    try:
        return orchestrate(args)
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
