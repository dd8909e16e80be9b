#!/usr/bin/env python3
"""Eval suite benchmark: 100 model-free cases with the offline mock provider (issue 18).

Run: .venv/bin/python bench/evals.py [--cases 100] [--runs 3]

A throw-away workspace gets one agent, ``evalbench``, that does what a small real agent does
per case: renders its input into a message, asks the LLM (the built-in ``mock`` provider: no
network, no model) and returns a JSON object. Its suite (``agents/evalbench/evals/bench.jsonl``,
deployed with it) has ``--cases`` cases spread over the model-free scorers: ``contains``,
``equals``, ``regex``, ``json_schema``, ``number``, ``not_contains``, ``max_ms`` and
``calls`` (the last one reads each case's trace).

Measured, each through the real CLI as a user (or CI) runs it:

- **cold**: the first ``rf eval evalbench --json``: CLI start-up, the store, the agent's workers
  starting, every case run and scored, the run stored;
- **warm**: ``--runs`` more runs of the same command (medians): the same, with the commit's
  files already on disk.

Printed: wall time, cases/s, the workers the runner used (attempts at a time, at most
``min(4, [runtime.staging] max_workers_per_agent)``) and the run's own ``duration_ms``
(the runner's wall time, without the CLI around it). Target: < 10 s for 100 cases on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import RF, bench_env, load_note, machine, run, table

AGENT_PY = """\
def handle(input, ctx):
    name = input["name"]
    reply = ctx.llm.chat([{"role": "user", "content": "Say hello to " + name}])
    return {"message": "hello, " + name, "answered": bool(reply.text), "n": input["n"],
            "tags": ["greeting", name.lower()]}
"""
AGENT_TOML = 'description = "eval bench"\nentrypoint = "agent:handle"\ntimeout_s = 30\n'
SCHEMA = {"type": "object", "required": ["message", "n"], "properties": {"n": {"type": "integer"}}}


def case(n: int) -> dict[str, object]:
    """Case *n*: a different model-free scorer mix for each residue, all passing."""
    name = f"User{n}"
    expect: dict[str, object] = [
        {"contains": f"hello, {name}"},
        {"regex": r"hello, User\d+", "not_contains": "goodbye"},
        {"json_schema": SCHEMA},
        {"number": {"path": "n", "value": n}},
        {"equals": {"message": f"hello, {name}", "answered": True, "n": n, "tags": ["greeting", name.lower()]}},
        {"max_ms": 5000, "calls": {"must": ["llm.chat"]}},
    ][n % 6]
    return {"id": f"case-{n:03d}", "input": {"name": name, "n": n}, "expect": expect}


def rf_eval(root: Path, env: dict[str, str]) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    proc = run([RF, "eval", "evalbench", "--json"], cwd=root, env=env, timeout=300)
    wall = time.perf_counter() - t0
    return wall, json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3, help="warm runs after the first (medians)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="rf-bench-evals-"))
    env = bench_env(tmp / "pycache")
    env["XDG_DATA_HOME"] = str(tmp / "data")
    env["PYTHON_KEYRING_BACKEND"] = "rf.secrets.FileKeyring"
    try:
        print(machine())
        print(load_note())
        suite = "".join(json.dumps(case(n)) + "\n" for n in range(args.cases))
        root = tmp / "ws"
        run([RF, "init", str(root)], env=env)
        agent = root / "agents" / "evalbench"
        (agent / "evals").mkdir(parents=True)
        (agent / "agent.py").write_text(AGENT_PY)
        (agent / "agent.toml").write_text(AGENT_TOML)
        (agent / "evals" / "bench.jsonl").write_text(suite)
        run([RF, "agents", "deploy", "evalbench", "-m", "bench"], cwd=root, env=env)

        cold_wall, cold = rf_eval(root, env)
        if cold["failed"]:
            bad = [c for c in cold["cases"] if not c["passed"]][:3]  # type: ignore[union-attr,index]
            raise SystemExit(f"bench: {cold['failed']} case(s) failed, e.g. {json.dumps(bad)[:600]}")
        warm = [rf_eval(root, env) for _ in range(args.runs)]
        warm_wall = statistics.median(w for w, _ in warm)
        warm_run = statistics.median(float(r["duration_ms"]) for _, r in warm) / 1000  # type: ignore[arg-type]
        n = int(cold["total"])  # type: ignore[call-overload]
        rows = [
            ["cold (first rf eval)", f"{cold_wall:.2f}", f"{n / cold_wall:.1f}",
             f"{float(cold['duration_ms']) / 1000:.2f}", str(cold["workers"])],  # type: ignore[arg-type]
            [f"warm (median of {args.runs})", f"{warm_wall:.2f}", f"{n / warm_wall:.1f}", f"{warm_run:.2f}",
             str(warm[0][1]["workers"])],
        ]
        print(f"\n{n} model-free cases, mock provider, rf eval evalbench (staging's deployed commit):\n")
        print(table(["run", "wall s", "cases/s", "runner s", "workers"], rows))
        worst = max(cold_wall, warm_wall)
        print(f"\n{'PASS' if worst < 10 else 'WARN'}: {n} cases in {worst:.1f} s at worst (target < 10 s)")
        print(load_note(flag_busy=False))
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
