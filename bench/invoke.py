"""Endpoint throughput: POST /production/agents/{name} on `rf serve` vs a bare Litestar echo app.

Run: .venv/bin/python bench/invoke.py [--quick] [--duration S] [--concurrency C] [--rounds R]

Three processes per measurement, all on 127.0.0.1:

- the target server: a real ``rf serve --port 0`` in a throw-away workspace
  (a trivial ``echo`` agent, deployed and promoted; every call is recorded as
  a production execution as usual; and an ``observed`` agent that makes 10
  custom spans, 2 memory writes and a session append, called with a session
  id per connection), or a bare Litestar app with one handler
  (``POST /echo`` returns its JSON body) run by uvicorn with the settings rf
  uses (one process, one pre-bound socket, access log off, log level warning,
  no server header);
- the load generator: this script with ``--load``, in its own process, the same
  for both targets: C asyncio tasks, each with one keep-alive HTTP/1.1
  connection, sending the same request back to back, and checking every
  answer (status 200 and the expected JSON);
- this script, which starts both servers, runs the load against each in turn
  (A B B A … so a change in background load affects both alike), and prints
  requests/s, p50 and p99, the ratio rf/echo (target ≥ 60 %) and the ratio
  observed/trivial agent (target ≥ 70 %).

Each ratio is judged on the median of its rounds' ratios (two targets measured
back to back), 5 rounds by default: on a shared virtual machine a burst of
load from elsewhere (the hypervisor's "steal" time, printed per run) then
spoils one pair instead of the pooled figure. The pooled ratio and every
round's ratio are printed next to it.

Afterwards it checks that the number of production executions rf recorded
equals the number of successful requests sent. A missed target prints a WARN
line and the exit status stays 0 (it is 1 only if the benchmark cannot run at
all).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _util as u

RATIO_TARGET = 0.6  # issue 16: the endpoint stays >= 0.6x the bare echo app
OBSERVED_RATIO_TARGET = 0.7  # observed agent / trivial agent (sessions, memory and traces)
AGENT = "echo"
AGENT_FILES = {
    "agent.toml": 'description = "Returns its input (benchmark)."\nentrypoint = "agent:handle"\ntimeout_s = 10\n',
    "agent.py": "def handle(input, ctx):\n    return input\n",
}
OBSERVED = "observed"
OBSERVED_FILES = {
    "agent.toml": 'description = "10 spans, 2 memory writes, a session append (benchmark)."\n'
    'entrypoint = "agent:handle"\ntimeout_s = 10\n',
    "agent.py": u.OBSERVED_AGENT,
}
PAYLOAD: dict[str, Any] = {"input": {"name": "Ada", "n": 42, "tags": ["bench", "rf"]}}
REQUEST_TIMEOUT_S = 30.0


# ====================================================================== echo server (subprocess)
def serve_echo(ready_file: Path, max_lifetime_s: float, socket_kind: str) -> None:
    """A bare Litestar app run the way rf.server.serve runs rf's app.

    The socket is bound here and handed to uvicorn, as rf does. With
    *socket_kind* ``"tcp"`` it is created with ``IPPROTO_TCP``, so asyncio
    sets ``TCP_NODELAY`` on every accepted connection, as it does when uvicorn
    binds ``--host/--port`` itself. ``"rf"`` copies ``rf.server.serve._bind``
    exactly (protocol 0: asyncio leaves Nagle's algorithm on).
    """
    import socket

    import uvicorn
    from litestar import Litestar, post

    @post("/echo", status_code=200)
    async def echo(data: dict[str, Any]) -> dict[str, Any]:
        return data

    app = Litestar(route_handlers=[echo], debug=False)
    proto = socket.IPPROTO_TCP if socket_kind == "tcp" else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.set_inheritable(True)
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5, server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)

    def expire() -> None:  # never outlive a parent that died without stopping us
        server.should_exit = True

    timer = threading.Timer(max_lifetime_s, expire)
    timer.daemon = True
    timer.start()
    tmp = ready_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": f"http://127.0.0.1:{sock.getsockname()[1]}", "pid": os.getpid()}))
    tmp.rename(ready_file)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def start_echo_server(
    tmp: Path, env: dict[str, str], max_lifetime_s: float, socket_kind: str = "tcp", timeout: float = 30.0
) -> u.Server:
    ready = tmp / "echo.json"
    proc = subprocess.Popen(
        [
            u.PYTHON,
            __file__,
            "--serve-echo",
            str(ready),
            "--max-lifetime",
            str(max_lifetime_s),
            "--echo-socket",
            socket_kind,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while not ready.exists():
            if proc.poll() is not None:
                raise RuntimeError(f"echo server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("echo server did not start in time")
            time.sleep(0.05)
        url = json.loads(ready.read_text())["url"]
        u.wait_healthy(url, "/echo", deadline, proc)  # GET -> 405 once it answers
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        raise
    return u.Server(proc, url)


# ====================================================================== load generator (subprocess)
@dataclass
class LoadStats:
    latencies: list[float] = field(default_factory=list)  # seconds, completed inside the window
    ok_total: int = 0  # successful answers, warm-up included
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)


def expected_body(kind: str) -> Any:
    return PAYLOAD if kind == "echo" else {"status": "succeeded", "output": PAYLOAD["input"]}


def body_ok(kind: str, data: Any) -> bool:
    if kind == "echo":
        return bool(data == PAYLOAD)
    return isinstance(data, dict) and data.get("status") == "succeeded" and data.get("output") == PAYLOAD["input"]


def request_body(kind: str, connection: int = 0) -> dict[str, Any]:
    """What a target is sent (the observed agent appends to a session: one per connection)."""
    if kind == "rf-observed":
        return {**PAYLOAD, "session_id": f"bench-{connection}"}
    return PAYLOAD


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
        elif name == "transfer-encoding":
            raise ValueError("chunked responses are not supported by this load generator")
    if length is None:
        raise ValueError("response without Content-Length")
    body = await reader.readexactly(length)
    return status, body, close


async def _worker(
    host: str, port: int, request: bytes, kind: str, window: tuple[float, float], stats: LoadStats
) -> None:
    start, end = window
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
    while time.perf_counter() < end:
        try:
            if conn is None:
                conn = await asyncio.wait_for(asyncio.open_connection(host, port), REQUEST_TIMEOUT_S)
            reader, writer = conn
            t0 = time.perf_counter()
            writer.write(request)
            status, body, close = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_S)
            t1 = time.perf_counter()
        except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            stats.error(f"{type(exc).__name__}: {exc}")
            if conn is not None:
                conn[1].close()
                conn = None
            await asyncio.sleep(0.05)  # a refused connection must not become a busy loop
            continue
        try:
            good = status == 200 and body_ok(kind, json.loads(body))
        except ValueError:
            good = False
        if good:
            stats.ok_total += 1
            if start <= t0 and t1 <= end:
                stats.latencies.append(t1 - t0)
        else:
            stats.error(f"HTTP {status}: {body[:200]!r}")
        if close:
            writer.close()
            conn = None
    if conn is not None:
        conn[1].close()


def run_load(url: str, path: str, kind: str, concurrency: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    host, port_text = url.split("//", 1)[1].rsplit(":", 1)

    def request(connection: int) -> bytes:
        body = json.dumps(request_body(kind, connection)).encode()
        return (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port_text}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    stats = LoadStats()

    async def main() -> dict[str, Any]:
        now = time.perf_counter()
        window = (now + warmup_s, now + warmup_s + duration_s)

        # Markers on stdout let the parent read server CPU time for exactly the window.
        async def markers() -> tuple[float, float]:
            await asyncio.sleep(max(0.0, window[0] - time.perf_counter()))
            cpu0 = sum(os.times()[:2])
            print("WINDOW-START", flush=True)
            await asyncio.sleep(max(0.0, window[1] - time.perf_counter()))
            print("WINDOW-END", flush=True)
            return cpu0, sum(os.times()[:2])

        marker_task = asyncio.create_task(markers())
        await asyncio.gather(
            *(_worker(host, int(port_text), request(i), kind, window, stats) for i in range(concurrency))
        )
        cpu0, cpu1 = await marker_task
        return {
            "window_s": duration_s,
            "latencies": stats.latencies,
            "ok_total": stats.ok_total,
            "errors": stats.errors,
            "error_samples": stats.error_samples,
            "client_cpu_s": cpu1 - cpu0,
        }

    return asyncio.run(main())


# ====================================================================== orchestration
@dataclass
class Target:
    name: str
    server: u.Server
    path: str
    kind: str
    latencies: list[float] = field(default_factory=list)
    window_s: float = 0.0
    ok_total: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    server_cpu_s: float = 0.0  # the server process
    children_cpu_s: float = 0.0  # its live child processes (rf's agent workers)
    client_cpu_s: float = 0.0
    probe: list[float] = field(default_factory=list)  # sequential requests on one idle connection
    round_rps: list[float] = field(default_factory=list)  # each round's throughput
    round_steal: list[float | None] = field(default_factory=list)  # share of cpu time stolen, per round

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(text)

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.window_s if self.window_s else 0.0


def load_once(target: Target, env: dict[str, str], concurrency: int, warmup_s: float, duration_s: float) -> None:
    cmd = [
        u.PYTHON,
        __file__,
        "--load",
        target.server.url,
        target.path,
        "--kind",
        target.kind,
        "--concurrency",
        str(concurrency),
        "--warmup",
        str(warmup_s),
        "--duration",
        str(duration_s),
    ]
    proc = subprocess.Popen(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # The load generator stops by itself; this only guards against a hang.
    watchdog = threading.Timer(warmup_s + duration_s + REQUEST_TIMEOUT_S + 60, proc.kill)
    watchdog.daemon = True
    watchdog.start()
    cpu_start: tuple[float, float] | None = None
    cpu_end: tuple[float, float] | None = None
    steal_start: tuple[float, float] | None = None
    steal_end: tuple[float, float] | None = None
    last = ""
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("WINDOW-START"):
                cpu_start = u.process_cpu(target.server.pid)
                steal_start = u.cpu_steal()
            elif line.startswith("WINDOW-END"):
                cpu_end = u.process_cpu(target.server.pid)
                steal_end = u.cpu_steal()
            elif line.strip():
                last = line
        stderr = proc.stderr.read() if proc.stderr else ""
        proc.wait(timeout=30)
    finally:
        watchdog.cancel()
    if proc.returncode != 0 or not last:
        raise RuntimeError(f"load generator failed (exit {proc.returncode}):\n{stderr}")
    result = json.loads(last)
    target.latencies.extend(result["latencies"])
    target.round_rps.append(len(result["latencies"]) / result["window_s"] if result["window_s"] else 0.0)
    stolen = None
    if steal_start is not None and steal_end is not None and steal_end[1] > steal_start[1]:
        stolen = (steal_end[0] - steal_start[0]) / (steal_end[1] - steal_start[1])
    target.round_steal.append(stolen)
    target.window_s += result["window_s"]
    target.ok_total += result["ok_total"]
    target.errors += result["errors"]
    target.error_samples.extend(result["error_samples"])
    target.client_cpu_s += result["client_cpu_s"]
    if cpu_start is not None and cpu_end is not None:
        target.server_cpu_s += cpu_end[0] - cpu_start[0]
        target.children_cpu_s += max(0.0, cpu_end[1] - cpu_start[1])


def probe_latency(target: Target, count: int, budget_s: float = 10.0) -> None:
    """*count* requests one after the other on one keep-alive connection (no other load)."""
    conn = http.client.HTTPConnection(target.server.host, target.server.port, timeout=REQUEST_TIMEOUT_S)
    body = json.dumps(request_body(target.kind)).encode()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    deadline = time.monotonic() + budget_s
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            try:
                conn.request("POST", target.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                elapsed = time.perf_counter() - t0
                good = resp.status == 200 and body_ok(target.kind, json.loads(data))
            except (OSError, ValueError, http.client.HTTPException) as exc:
                target.error(f"probe: {type(exc).__name__}: {exc}")
                break
            if good:
                target.ok_total += 1
                target.probe.append(elapsed)
            else:
                target.error(f"probe: HTTP {resp.status}: {data[:200]!r}")
    finally:
        conn.close()


def count_executions(server: u.Server, agent: str, limit: int = 10_000, max_pages: int = 50) -> tuple[int, int]:
    """(all, succeeded) production executions of *agent*, paging through the management API."""
    total = succeeded = 0
    before: str | None = None
    for _ in range(max_pages):
        query = f"/api/executions?env=production&agent={agent}&limit={limit}"
        if before is not None:
            query += f"&before={before}"
        status, page = u.request_json(server.url, "GET", query, token=server.token, timeout=120)
        if status != 200:
            raise RuntimeError(f"GET {query} answered {status}: {page}")
        total += len(page)
        succeeded += sum(1 for ex in page if ex.get("status") == "succeeded")
        if len(page) < limit:
            return total, succeeded
        before = page[-1]["id"]
    raise RuntimeError(f"more than {max_pages * limit} executions; not counted")


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def orchestrate(args: argparse.Namespace) -> int:
    quick = args.quick
    duration = args.duration if args.duration is not None else (3.0 if quick else 6.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if quick else 2.0)
    rounds = max(1, args.rounds if args.rounds is not None else (1 if quick else 5))
    concurrency = max(1, args.concurrency)
    print(f"# rf endpoint throughput — {time.strftime('%Y-%m-%d %H:%M')} — {u.machine()}")
    print(
        f"# load: 1 process, {concurrency} keep-alive connections (asyncio), {warmup:g} s warm-up + "
        f"{duration:g} s measured, {rounds} round(s) per target, order "
        + " ".join(("rf observed echo" if i % 2 == 0 else "echo observed rf") for i in range(rounds))
    )
    print(f"# before: {u.load_note()}")

    with tempfile.TemporaryDirectory(prefix="rf-bench-invoke-") as tmp_name:
        tmp = Path(tmp_name)
        env = u.bench_env(None if args.no_pycache_prefix else tmp / "pycache")
        root = u.make_workspace(tmp, env, agents={AGENT: AGENT_FILES, OBSERVED: OBSERVED_FILES},
                                promote=[AGENT, OBSERVED], deploy_hello=False)
        lifetime = 2 * rounds * (warmup + duration + REQUEST_TIMEOUT_S) + 300
        rf_server = u.start_rf_server(root, env)
        echo_server: u.Server | None = None
        try:
            echo_server = start_echo_server(tmp, env, lifetime, args.echo_socket)
            rf = Target("rf", rf_server, f"/production/agents/{AGENT}", "rf")
            observed = Target("observed", rf_server, f"/production/agents/{OBSERVED}", "rf-observed")
            echo = Target("echo", echo_server, "/echo", "echo")
            targets = (rf, observed, echo)
            # One checked call each before the load (the first rf call also starts the agent's worker).
            for target in targets:
                status, data = u.request_json(target.server.url, "POST", target.path, request_body(target.kind))
                if status != 200 or not body_ok(target.kind, data):
                    raise RuntimeError(f"{target.name} answered {status}: {data}")
                target.ok_total += 1
            for target in targets:
                probe_latency(target, 5)  # warm-up
                target.probe.clear()
                probe_latency(target, args.probe)
            for i in range(rounds):
                for target in targets if i % 2 == 0 else targets[::-1]:
                    load_once(target, env, concurrency, warmup, duration)
            counted: dict[str, tuple[int, int] | str] = {}
            for target, agent in ((rf, AGENT), (observed, OBSERVED)):
                try:
                    counted[target.name] = count_executions(rf_server, agent)
                except Exception as exc:
                    counted[target.name] = f"{type(exc).__name__}: {exc}"
        finally:
            rf_server.stop()
            if echo_server is not None:
                echo_server.stop()

    print(f"# after: {u.load_note(flag_busy=False)}")
    rows = []
    for t in (rf, observed, echo):
        rows.append(
            [
                f"{t.name} ({t.path})",
                f"{t.rps:.0f}",
                fmt_ms(u.percentile(t.latencies, 50)),
                fmt_ms(u.percentile(t.latencies, 99)),
                str(len(t.latencies)),
                str(t.errors),
                f"{t.server_cpu_s / t.window_s:.0%}",
                f"{t.children_cpu_s / t.window_s:.0%}" if t is not echo else "-",
                f"{t.client_cpu_s / t.window_s:.0%}",
                fmt_ms(u.median(t.probe)),
            ]
        )
    print()
    print(
        u.table(
            [
                "target",
                "req/s",
                "p50 ms",
                "p99 ms",
                "requests",
                "errors",
                "server CPU",
                "workers CPU",
                "load-gen CPU",
                "1-conn ms",
            ],
            rows,
        )
    )
    print(
        f"  req/s, p50, p99: answers completed inside the measured windows, {concurrency} connections. CPU: share of"
        " one core over those windows (server process; rf's agent worker processes). 1-conn ms: median of"
        f" {args.probe} requests sent one after the other on one connection, before the load."
    )
    print()
    ok = True
    for t in (rf, observed, echo):
        if t.errors:
            ok = False
            print(f"WARN: {t.errors} failed request(s) to {t.name}, e.g. {t.error_samples[:2]}")
    ok = report_ratio("rf/echo throughput", rf, echo, RATIO_TARGET) and ok
    ok = report_ratio("observed/trivial agent throughput", observed, rf, OBSERVED_RATIO_TARGET) and ok
    # Server CPU per answered request (over the measured windows): steadier than throughput on a shared
    # machine, and it says where the observed agent's extra cost lands.
    per_request = {t.name: t.server_cpu_s / len(t.latencies) * 1000 for t in (rf, observed, echo) if t.latencies}
    if len(per_request) == 3:
        print(
            f"INFO: server CPU per request: rf {per_request[rf.name]:.2f} ms, observed {per_request[observed.name]:.2f}"
            f" ms, echo {per_request[echo.name]:.2f} ms (rf/observed = {per_request[rf.name] / per_request[observed.name]:.0%})"
        )
    steals = [x for t in (rf, observed, echo) for x in t.round_steal if x is not None]
    if steals:
        print(
            f"INFO: cpu time stolen by the hypervisor during the measured windows: median {u.median(steals):.1%},"
            f" worst {max(steals):.1%} (a shared virtual machine: rounds with more are noisier)"
        )
        by_round = [
            f"{ratio:.0%} ({'/'.join('?' if x is None else f'{x:.0%}' for x in (a, b))})"
            for ratio, a, b in zip(paired_ratios(observed, rf), observed.round_steal, rf.round_steal, strict=False)
        ]
        print(f"INFO: observed/trivial by round (cpu stolen in the observed/trivial windows): {', '.join(by_round)}")
    for t in (rf, observed):
        sent = t.ok_total
        got = counted[t.name]
        if isinstance(got, str):
            ok = False
            print(f"WARN: could not count the recorded production executions of {t.name}: {got}")
        elif got == (sent, sent):
            print(
                f"PASS: {t.name}: production executions recorded = {sent} = successful requests sent (warm-ups, "
                "probes and the check call included)"
            )
        else:
            ok = False
            print(
                f"WARN: {t.name}: production executions recorded = {got[0]} ({got[1]} succeeded), "
                f"successful requests sent = {sent}"
            )
    if u.median(rf.probe) > 0.030 > u.median(echo.probe):
        print(
            f"NOTE: rf needs {fmt_ms(u.median(rf.probe))} ms per request on an idle keep-alive connection, the "
            f"echo app {fmt_ms(u.median(echo.probe))} ms. About 40 ms is the signature of Nagle's algorithm meeting "
            "delayed ACKs (no TCP_NODELAY on the server's sockets); compare bench/invoke.py --echo-socket rf"
        )
    if not ok:
        print("(some figures missed their target; see the WARN lines above)")
    return 0


def paired_ratios(target: Target, baseline: Target) -> list[float]:
    """``target``'s throughput as a share of ``baseline``'s, round by round (each pair measured
    back to back, so a burst of load from elsewhere hits one pair, not the whole figure)."""
    return [t / b for t, b in zip(target.round_rps, baseline.round_rps, strict=False) if b > 0]


def report_ratio(label: str, target: Target, baseline: Target, goal: float) -> bool:
    """Print ``PASS``/``WARN`` for ``target``'s throughput as a share of ``baseline``'s; whether it met ``goal``.

    The verdict is on the median of the rounds' paired ratios (with 3 rounds or
    more), which one disturbed round cannot move; the ratio of the pooled
    throughputs and each round's ratio are printed next to it.
    """
    pooled = target.rps / baseline.rps if baseline.rps else 0.0
    pairs = paired_ratios(target, baseline)
    ratio = u.median(pairs) if len(pairs) >= 3 else pooled
    verdict = "PASS" if ratio >= goal else "WARN"
    how = (f"median of {len(pairs)} rounds (each {', '.join(f'{r:.0%}' for r in pairs)}; pooled {pooled:.0%})"
           if len(pairs) >= 3 else "pooled over the rounds")
    print(
        f"{verdict}: {label} = {ratio:.0%} (target ≥ {goal:.0%}), {how}; "
        f"p50 {fmt_ms(u.percentile(target.latencies, 50))} ms vs {fmt_ms(u.percentile(baseline.latencies, 50))} ms"
    )
    return verdict == "PASS"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one 3 s round per target (about 20 s in all)")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per round (default 6, quick 3)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per round (default 2, quick 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per target (default 5, quick 1)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent keep-alive connections (default 8)")
    parser.add_argument(
        "--probe", type=int, default=20, help="sequential requests on one idle connection, per target (default 20)"
    )
    parser.add_argument(
        "--no-pycache-prefix", action="store_true", help="use the calling environment's bytecode settings as they are"
    )
    parser.add_argument(
        "--echo-socket",
        choices=["tcp", "rf"],
        default="tcp",
        help="how the echo server creates its socket: tcp (IPPROTO_TCP, so TCP_NODELAY; default) "
        "or rf (exactly like rf.server.serve._bind)",
    )
    # internal modes (this script runs itself as the echo server and as the load generator)
    parser.add_argument("--serve-echo", metavar="READY_FILE", help=argparse.SUPPRESS)
    parser.add_argument("--max-lifetime", type=float, default=600.0, help=argparse.SUPPRESS)
    parser.add_argument("--load", nargs=2, metavar=("URL", "PATH"), help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["rf", "rf-observed", "echo"], default="echo", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_echo:
        serve_echo(Path(args.serve_echo), args.max_lifetime, args.echo_socket)
        return 0
    if args.load:
        result = run_load(
            args.load[0],
            args.load[1],
            args.kind,
            max(1, args.concurrency),
            args.warmup if args.warmup is not None else 2.0,
            args.duration if args.duration is not None else 10.0,
        )
        print(json.dumps(result), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
