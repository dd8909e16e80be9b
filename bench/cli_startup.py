"""CLI start-up time: median wall time of a few rf commands vs `python -c pass`.

Run: .venv/bin/python bench/cli_startup.py [--quick] [--runs N] [--warmup N]

Every command is a fresh process of the venv's interpreter. The commands are
measured round-robin (one run of each, then the next round) so that a change
in background load hits all of them alike; ratios are to `python -c pass`
measured in the same rounds. A missed target prints a WARN line and the exit
status stays 0 (it is 1 only if the benchmark cannot run at all).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import _util as u

VERSION_TARGET_RATIO = 6.0


@dataclass
class Case:
    label: str
    argv: list[str]
    cwd: Path | None = None
    check: Callable[[str], bool] | None = None  # validates stdout of each run
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def time_once(case: Case, env: dict[str, str], timeout: float) -> None:
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            case.argv, cwd=case.cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        case.failures.append(f"timed out after {timeout:.0f} s")
        return
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        case.failures.append(f"exit {proc.returncode}: {proc.stderr.strip()[:200]}")
        return
    if case.check is not None and not case.check(proc.stdout):
        case.failures.append(f"unexpected output: {proc.stdout.strip()[:200]}")
        return
    case.samples.append(elapsed)


def measure(
    cases: Sequence[Case], env: dict[str, str], *, runs: int, warmup: int, deadline: float, timeout: float
) -> int:
    """Warm-up, then up to *runs* round-robin rounds; no new round starts after *deadline* (monotonic)."""
    for _ in range(warmup):
        for case in cases:
            time_once(case, env, timeout)
            case.samples.clear()
    done = 0
    for _ in range(runs):
        if done and time.monotonic() > deadline:
            print(f"  (time budget spent: {done} of {runs} rounds of {', '.join(c.label for c in cases)})")
            break
        for case in cases:
            time_once(case, env, timeout)
        done += 1
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer runs (about 20 s in all)")
    parser.add_argument("--runs", type=int, default=None, help="measured runs per command (default 15, quick 5)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up runs per command (default 2, quick 1)")
    parser.add_argument(
        "--no-pycache-prefix", action="store_true", help="use the calling environment's bytecode settings as they are"
    )
    args = parser.parse_args(argv)
    runs = max(1, args.runs if args.runs is not None else (5 if args.quick else 15))
    warmup = max(0, args.warmup if args.warmup is not None else (1 if args.quick else 2))
    budget_s = 12.0 if args.quick else 80.0  # for both phases; bounds the total even on a loaded machine
    timeout = 30.0

    print(f"# rf CLI start-up — {time.strftime('%Y-%m-%d %H:%M')} — {u.machine()}")
    print(f"# {runs} measured runs per command after {warmup} warm-up(s), round-robin; wall time per process")
    print(f"# before: {u.load_note()}")

    with tempfile.TemporaryDirectory(prefix="rf-bench-cli-") as tmp_name:
        tmp = Path(tmp_name)
        env = u.bench_env(None if args.no_pycache_prefix else tmp / "pycache")
        if not args.no_pycache_prefix:
            print("# bytecode cached in a private PYTHONPYCACHEPREFIX (warm-ups fill it); --no-pycache-prefix to skip")
        root = u.make_workspace(tmp, env)

        def lists_hello(out: str) -> bool:
            return "hello" in out

        baseline = Case("python -c pass", [u.PYTHON, "-c", "pass"])
        version = Case("rf --version", [u.RF, "--version"], check=lambda out: out.startswith("rf "))
        helptext = Case("rf --help", [u.RF, "--help"], check=lambda out: "agents" in out)
        local = Case("rf agents list (no server)", [u.RF, "agents", "list"], cwd=root, check=lists_hello)
        remote = Case("rf agents list (server)", [u.RF, "agents", "list"], cwd=root, check=lists_hello)
        baseline2 = Case("python -c pass", [u.PYTHON, "-c", "pass"])

        end = time.monotonic() + budget_s
        phase_a = time.monotonic() + 0.65 * budget_s  # 4 commands here, 2 in the second phase
        measure([baseline, version, helptext, local], env, runs=runs, warmup=warmup, deadline=phase_a, timeout=timeout)
        server = u.start_rf_server(root, env)
        try:
            status = u.run([u.RF, "status", "--json"], cwd=root, env=env)
            backend = json.loads(status.stdout).get("backend")
            if backend != "http":
                print(f"WARN: with the server running, rf status reports backend {backend!r}, not 'http'")
            measure([baseline2, remote], env, runs=runs, warmup=warmup, deadline=end, timeout=timeout)
        finally:
            server.stop()

    base_samples = baseline.samples + baseline2.samples
    base = u.median(base_samples)
    rows: list[list[str]] = []
    for label, samples, failures in [
        (baseline.label, base_samples, baseline.failures + baseline2.failures),
        *((c.label, c.samples, c.failures) for c in (version, helptext, local, remote)),
    ]:
        med = u.median(samples)
        rows.append(
            [
                label,
                f"{med * 1000:.1f}",
                f"{med / base:.1f}×",
                f"{min(samples) * 1000:.1f}" if samples else "-",
                str(len(samples)),
                str(len(failures)),
            ]
        )
    print(f"# after: {u.load_note(flag_busy=False)}")
    print()
    print(u.table(["command", "median ms", "× python -c pass", "min ms", "runs", "failed"], rows))
    print()

    ok = True
    for case in (baseline, version, helptext, local, remote, baseline2):
        for failure in case.failures[:3]:
            ok = False
            print(f"WARN: {case.label}: {failure}")
    ratio = u.median(version.samples) / base
    if version.samples and ratio < VERSION_TARGET_RATIO:
        print(f"PASS: rf --version is {ratio:.1f}× python -c pass (target < {VERSION_TARGET_RATIO:g}×)")
    else:
        ok = False
        print(f"WARN: rf --version is {ratio:.1f}× python -c pass (target < {VERSION_TARGET_RATIO:g}×)")
    if not ok:
        print("(some figures missed their target or some runs failed; see the WARN lines above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
