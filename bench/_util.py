"""Helpers shared by the benchmark scripts (not a test module, not part of rf).

Everything here runs the *installed* ``rf`` as a subprocess, in a throw-away
workspace, and talks to servers on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


#: The agent both bench/invoke.py and bench/observability.py measure against the trivial one:
#: 10 custom spans, 2 memory writes and a session append per call (issue 4's benchmark).
OBSERVED_AGENT = """\
def handle(input, ctx):
    for n in range(10):
        with ctx.trace.span("step", n=n):
            pass
    ctx.memory.set("last", input)
    ctx.memory.set("count", input.get("n", 0))
    ctx.session.append("tool", "done")
    return input
"""


def venv_bin() -> Path:
    """The bin directory of the venv rf is installed in (the repo's .venv if it exists)."""
    repo_venv = ROOT / ".venv" / "bin"
    if (repo_venv / "rf").exists():
        return repo_venv
    here = Path(sys.executable).parent
    if (here / "rf").exists():
        return here
    raise SystemExit("bench: cannot find the rf console script; run `make bench` (it creates .venv)")


BIN = venv_bin()
PYTHON = str(BIN / "python")
RF = str(BIN / "rf")


def bench_env(pycache_dir: Path | None) -> dict[str, str]:
    """The environment every measured process gets.

    RF_* variables are dropped (nothing of the developer's own setup leaks in)
    and output is plain. With *pycache_dir*, bytecode is cached there
    (``PYTHONPYCACHEPREFIX``) even if ``PYTHONDONTWRITEBYTECODE`` is set in the
    calling shell: an installed rf always has its ``.pyc`` files, and without
    them every run would re-compile rf's own modules. Nothing is written into
    the repository.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "120", "PYTHONUNBUFFERED": "1"})
    if pycache_dir is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache_dir)
    return env


def run(
    cmd: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run a command, failing loudly (with its output) if it fails."""
    proc = subprocess.run(
        list(cmd), cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")
    return proc


def make_workspace(
    parent: Path,
    env: dict[str, str],
    *,
    agents: dict[str, dict[str, str]] | None = None,
    promote: Sequence[str] = (),
    deploy_hello: bool = True,
) -> Path:
    """``rf init DIR --example hello``, extra agents, ``rf agents deploy`` each, promote some."""
    root = parent / "ws"
    run([RF, "init", str(root), "--example", "hello"], env=env)
    names = ["hello"] if deploy_hello else []
    for name, files in (agents or {}).items():
        d = root / "agents" / name
        d.mkdir(parents=True, exist_ok=True)
        for rel, text in files.items():
            (d / rel).write_text(text)
        names.append(name)
    for name in names:
        run([RF, "agents", "deploy", name, "-m", "bench"], cwd=root, env=env)
    for name in promote:
        run([RF, "agents", "promote", name, "--yes"], cwd=root, env=env)
    return root


class Server:
    """A background ``rf serve --port 0`` (or any server that prints nothing we need)."""

    def __init__(self, proc: subprocess.Popen[bytes], url: str, token: str = "") -> None:
        self.proc = proc
        self.url = url
        self.token = token
        parts = url.split("//", 1)[1].rsplit(":", 1)
        self.host = parts[0]
        self.port = int(parts[1])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def wait_healthy(url: str, path: str, deadline: float, proc: subprocess.Popen[bytes]) -> None:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} during start-up")
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            conn.close()
            if status < 500:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer {path} in time")


def start_rf_server(root: Path, env: dict[str, str], timeout: float = 30.0) -> Server:
    """``rf serve --port 0`` in *root*; waits for .rf/server.json and /api/health."""
    info_file = root / ".rf" / "server.json"
    proc = subprocess.Popen(
        [RF, "serve", "--port", "0"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"rf serve exited with {proc.returncode} (run it by hand in {root} to see why)")
            if time.monotonic() > deadline:
                raise RuntimeError("rf serve did not write .rf/server.json in time")
            if info_file.exists():
                try:
                    info = json.loads(info_file.read_text())
                    break
                except ValueError:
                    pass
            time.sleep(0.05)
        wait_healthy(info["url"], "/api/health", deadline, proc)
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        raise
    return Server(proc, info["url"], info["token"])


def request_json(
    url: str, method: str, path: str, body: Any = None, token: str = "", timeout: float = 60.0
) -> tuple[int, Any]:
    host, port = url.split("//", 1)[1].rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        conn.request(method, path, body=None if body is None else json.dumps(body), headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else None
    finally:
        conn.close()


# ---------------------------------------------------------------- statistics / output
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain, aligned text table (first column left-aligned, the rest right-aligned)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def cpu_steal() -> tuple[float, float] | None:
    """(stolen, total) cpu time in seconds so far, all cpus (/proc/stat, Linux): time the
    hypervisor gave to other machines while this one wanted to run."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    if len(fields) < 8:
        return None
    return fields[7] / tick, sum(fields[:8]) / tick


def process_cpu(pid: int) -> tuple[float, float] | None:
    """(own, live direct children's) utime+stime in seconds of a live process, from /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    def one(p: int) -> float:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    try:
        own = one(pid)
    except (OSError, ValueError, IndexError):
        return None
    children = 0.0
    for child in children_of(pid):
        try:
            children += one(child)
        except (OSError, ValueError, IndexError):
            pass
    return own, children


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return found


def machine() -> str:
    import platform

    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cpu(s), "
        f"Python {platform.python_version()} ({PYTHON})"
    )


def load_note(*, flag_busy: bool = True) -> str:
    """The 1/5/15-minute load averages (flagged, before a run, when other work keeps the cpus busy)."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load average unknown"
    cpus = os.cpu_count() or 1
    busy = ""
    if flag_busy and one > cpus * 0.75:
        busy = " — BUSY: other processes compete for the cpus, expect noisy figures"
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {cpus} cpu(s){busy}"


def add_round_options(parser: Any, *, quick: str, per: str = "per round", rounds_help: str = "rounds") -> None:
    """The load options the timed benchmarks share: --quick, --duration, --warmup, --rounds."""
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--duration", type=float, default=None, help=f"measured seconds {per} (default 6)")
    parser.add_argument("--warmup", type=float, default=None, help=f"warm-up seconds {per} (default 2)")
    parser.add_argument("--rounds", type=int, default=None, help=f"{rounds_help} (default 3)")


def settle_rounds(args: Any) -> None:
    """Fill the defaults of :func:`add_round_options` (shorter with --quick)."""
    args.duration = args.duration or (3.0 if args.quick else 6.0)
    args.warmup = args.warmup or (1.0 if args.quick else 2.0)
    args.rounds = max(1, args.rounds or (1 if args.quick else 3))


@contextlib.contextmanager
def postgres() -> Iterator[Any]:
    """A real PostgreSQL for the benchmark (tests/pgserver.py), as ``PgDatabases``; None (with the
    reason on stderr) when it cannot start."""
    sys.path.insert(0, str(ROOT / "tests"))
    from pgserver import PgDatabases, postgres_server

    try:
        server_cm = postgres_server()
        server = server_cm.__enter__()
    except BaseException as exc:  # pytest.skip/fail outside pytest are BaseExceptions
        print(f"bench: cannot start PostgreSQL: {exc}", file=sys.stderr)
        yield None
        return
    try:
        yield PgDatabases(server)
    finally:
        server_cm.__exit__(None, None, None)
