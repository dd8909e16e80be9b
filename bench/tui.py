"""Dashboard (`rf ui`) timings: first paint, environment switch, Executions over 1,000,000 rows.

Run: .venv/bin/python bench/tui.py [--runs N] [--rows N] [--quick]

Each run starts the real `rf ui` in a pseudo-terminal (120x40) in a throw-away
workspace. The app writes one JSON line per painted view to the file named by
``RF_TUI_TRACE`` (the moment fresh data is on screen, after the refresh that
shows it), and this script times:

- start-up: process start → the Agents view painted with its data;
- switch: the `e` key sent → the Agents view painted for production;
- executions: the Executions key sent → its first page painted, with
  1,000,000 executions in the store (inserted with one DuckDB statement
  before the runs; bench scripts may import duckdb).

Medians are compared with the targets (first paint < 1.5 s, switch < 200 ms,
executions < 500 ms); a miss prints WARN. Exit status is 0 unless a run fails.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

import _util as u

TARGETS = {"start-up": 1.5, "switch": 0.2, "executions": 0.5}
ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"  # rf.ids: Crockford base 32, lowercase


class UI:
    """`rf ui` in a pseudo-terminal; its output is drained (and discarded) on a thread."""

    def __init__(self, root: Path, env: dict[str, str], trace: Path) -> None:
        self.trace = trace
        trace.unlink(missing_ok=True)
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        self.master = master
        self.started = time.time()
        self.proc = subprocess.Popen(
            [u.RF, "ui"],
            cwd=root,
            env={**env, "RF_TUI_TRACE": str(trace), "RF_TUI_MARKS": "1", "TERM": "xterm-256color"},
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
        os.close(slave)
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        while True:
            try:
                if not os.read(self.master, 65536):
                    return
            except OSError:
                return

    def events(self) -> list[dict[str, Any]]:
        if not self.trace.exists():
            return []
        return [json.loads(line) for line in self.trace.read_text().splitlines() if line.strip()]

    def wait_for(self, view: str, env: str, after: float, timeout: float = 60.0) -> dict[str, Any]:
        """The first `painted` event of (view, env) later than `after`: {"t": wall, "cpu": process cpu}."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            for e in self.events():
                if e.get("view") == view and e.get("env") == env and e["t"] >= after:
                    return e
            if self.proc.poll() is not None:
                raise RuntimeError(f"rf ui exited with {self.proc.returncode}")
            time.sleep(0.005)
        raise RuntimeError(f"rf ui did not paint {view} ({env}) within {timeout:.0f} s")

    def press(self, key: str) -> float:
        sent = time.time()
        os.write(self.master, key.encode())
        return sent

    def cpu_now(self) -> float:
        """The app's CPU seconds so far (utime + stime of every thread, from /proc)."""
        usage = u.process_cpu(self.proc.pid)
        return usage[0] if usage else float("nan")

    def quit(self) -> None:
        try:
            os.write(self.master, b"q")
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait(timeout=5)
        finally:
            os.close(self.master)


def id_sql(ms: str, rand: str) -> str:
    """SQL for an rf id ('ex_' + 9 base-32 digits of ms + 12 of rand) from two BIGINT expressions."""

    def digits(expr: str, n: int) -> str:
        return " || ".join(
            f"substr('{ALPHABET}', (({expr} >> {5 * (n - 1 - k)}) & 31)::INTEGER + 1, 1)" for k in range(n)
        )

    return f"'ex_' || {digits(ms, 9)} || {digits(rand, 12)}"


def fill_executions(root: Path, rows: int) -> float:
    """Insert `rows` executions (3/4 staging) with rf's id format, one statement; returns seconds."""
    import duckdb  # bench scripts may import duckdb; rf itself only does in rf/store

    start = time.perf_counter()
    now_ms = int(time.time() * 1000) - 60_000
    con = duckdb.connect(str(root / ".rf" / "rf.duckdb"))
    try:
        ms = f"({now_ms} - (i * 37))"  # one execution every 37 ms, going back in time
        rand = "(hash(i) & 1099511627775)"
        con.execute(f"""
            INSERT INTO executions (id, env, agent, commit_id, source, status, input, output, error, error_type,
                                    traceback, logs, started_at, ended_at, duration_ms, session_id)
            SELECT {id_sql(ms, rand)},
                   CASE WHEN i % 4 = 0 THEN 'production' ELSE 'staging' END,
                   CASE WHEN i % 3 = 0 THEN 'hello' ELSE 'support' END,
                   'c0ffee00c0ffee00', CASE WHEN i % 5 = 0 THEN 'test' ELSE 'endpoint' END,
                   CASE WHEN i % 17 = 0 THEN 'failed' ELSE 'succeeded' END,
                   '{{"name": "Ada"}}', '{{"message": "hello, Ada"}}',
                   CASE WHEN i % 17 = 0 THEN 'ValueError: no' END, NULL, NULL, '',
                   make_timestamp(({ms}) * 1000), make_timestamp(({ms} + 12) * 1000), 12.5, NULL
            FROM range({rows}) t(i)
        """)
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return time.perf_counter() - start


def one_run(root: Path, env: dict[str, str], trace: Path) -> tuple[dict[str, float], dict[str, float]]:
    """(wall seconds, CPU seconds of the app) per measure.

    CPU time is what the app itself spent (every thread); on a busy machine
    the wall time grows with the competition for the cpus while the CPU time
    stays close to what an idle machine would show as wall time.
    """
    ui = UI(root, env, trace)
    try:
        first = ui.wait_for("agents", "staging", 0)
        wall = {"start-up": first["t"] - ui.started}
        cpu = {"start-up": first["cpu"]}
        time.sleep(1.0)  # let the first detail load and the warm-up finish
        before = ui.cpu_now()
        sent = ui.press("e")
        event = ui.wait_for("agents", "production", sent)
        wall["switch"] = event["t"] - sent
        cpu["switch"] = event["cpu"] - before
        time.sleep(0.5)
        sent = ui.press("e")
        ui.wait_for("agents", "staging", sent)
        time.sleep(0.5)
        before = ui.cpu_now()
        sent = ui.press("6")  # the Executions view
        event = ui.wait_for("executions", "staging", sent)
        wall["executions"] = event["t"] - sent
        cpu["executions"] = event["cpu"] - before
        global LAST_MARKS
        LAST_MARKS = [(e["what"], e["t"] - ui.started, e["cpu"]) for e in ui.events() if e.get("event") == "mark"]
        LAST_MARKS.append(("Agents painted", first["t"] - ui.started, first["cpu"]))
        return wall, cpu
    finally:
        ui.quit()


#: (what, wall seconds since the process started, process CPU seconds) of the last run's start-up
LAST_MARKS: list[tuple[str, float, float]] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=1_000_000, help="executions in the store")
    parser.add_argument("--quick", action="store_true", help="2 runs, 100,000 executions")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rows = 2, 100_000
    print(f"rf ui bench — {u.machine()}")
    print(u.load_note())
    with tempfile.TemporaryDirectory(prefix="rf-bench-tui-") as tmp:
        tmp_path = Path(tmp)
        env = u.bench_env(tmp_path / "pycache")
        env["RF_SECRETS_FILE"] = str(tmp_path / "secrets.json")
        support = {
            "agent.toml": 'description = "Answers support questions"\nentrypoint = "agent:handle"\n',
            "agent.py": "def handle(input, ctx):\n    return {'answer': 'ok'}\n",
        }
        root = u.make_workspace(tmp_path, env, agents={"support": support}, promote=["hello"])
        toml = root / "rf.toml"
        toml.write_text(toml.read_text().replace("port = 7410", "port = 0"))  # any free port
        seconds = fill_executions(root, args.rows)
        print(f"inserted {args.rows:,} executions in {seconds:.1f} s")
        # warm-up: byte-compile rf into the bench's pycache, fill the OS file cache
        one_run(root, env, tmp_path / "trace.jsonl")
        samples: dict[str, list[float]] = {k: [] for k in TARGETS}
        cpu_samples: dict[str, list[float]] = {k: [] for k in TARGETS}
        for n in range(args.runs):
            wall, cpu = one_run(root, env, tmp_path / "trace.jsonl")
            for key in TARGETS:
                samples[key].append(wall[key])
                cpu_samples[key].append(cpu[key])
            measured = ", ".join(f"{k} {wall[k] * 1000:.0f} ms (cpu {cpu[k] * 1000:.0f} ms)" for k in TARGETS)
            print(f"  run {n + 1}: {measured}", flush=True)
    rows = []
    warnings = []
    for key, target in TARGETS.items():
        med = u.median(samples[key])
        rows.append(
            [
                key,
                f"{med * 1000:.0f} ms",
                f"{min(samples[key]) * 1000:.0f} ms",
                f"{max(samples[key]) * 1000:.0f} ms",
                f"{u.median(cpu_samples[key]) * 1000:.0f} ms",
                f"< {target * 1000:.0f} ms",
            ]
        )
        if med >= target:
            warnings.append(f"WARN: {key} median {med * 1000:.0f} ms misses the target of {target * 1000:.0f} ms")
    print()
    print(u.table(["measure", "median", "min", "max", "app cpu", "target"], rows))
    if LAST_MARKS:
        print("\nstart-up of the last run (wall since the process started / the app's CPU):")
        for what, at, used in sorted(LAST_MARKS, key=lambda m: m[1]):
            print(f"  {what:<24} {at * 1000:6.0f} ms  cpu {used * 1000:6.0f} ms")
    label = f"Executions first paint with {args.rows:,} executions in the store"
    print(f"({label}; start-up = process start to the Agents view painted)")
    for w in warnings:
        print(w)
    print(u.load_note(flag_busy=False))
    sys.exit(0)


if __name__ == "__main__":
    main()
