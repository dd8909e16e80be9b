"""OpenAI-compatible throughput: POST /production/v1/chat/completions vs POST /production/agents/{name}.

Run: .venv/bin/python bench/openai_api.py [--quick] [--duration S] [--concurrency C] [--rounds R]

One real ``rf serve --port 0`` in a throw-away workspace with a trivial agent
(``def handle(input, ctx): return "ok"``, deployed and promoted), measured
through its two doors in the same run:

- ``native``: ``POST /production/agents/echo`` with ``{"input": {"message": "hi"}}``;
- ``openai``: ``POST /production/v1/chat/completions`` with ``{"model": "echo",
  "messages": [{"role": "user", "content": "hi"}]}`` (not streamed), the body
  an OpenAI client sends.

The load generator is this script with ``--load``, in its own process: C
asyncio tasks, each with one keep-alive HTTP/1.1 connection, sending the same
request back to back and checking every answer (status 200 and the expected
JSON). Rounds alternate the order (native openai, openai native, …), and the
ratio openai/native (target ≥ 80 %) is judged on the median of the rounds'
paired ratios (with 3 rounds or more), as bench/invoke.py does.

Afterwards it checks that rf recorded one production execution per successful
request, with the source ``openai`` for the OpenAI door and ``endpoint`` for
the native one. A missed target prints a WARN line; the exit status is 1 only
if the benchmark cannot run at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

RATIO_TARGET = 0.8
AGENT = "echo"
AGENT_FILES = {
    "agent.toml": 'description = "Answers ok (benchmark)."\nentrypoint = "agent:handle"\ntimeout_s = 10\n',
    "agent.py": "def handle(input, ctx):\n    return 'ok'\n",
}
BODIES: dict[str, dict[str, Any]] = {
    "native": {"input": {"message": "hi"}},
    "openai": {"model": AGENT, "messages": [{"role": "user", "content": "hi"}]},
}
PATHS = {"native": f"/production/agents/{AGENT}", "openai": "/production/v1/chat/completions"}
SOURCES = {"native": "endpoint", "openai": "openai"}
REQUEST_TIMEOUT_S = 30.0


def answer_ok(kind: str, data: Any) -> bool:
    if kind == "native":
        return isinstance(data, dict) and data.get("output") == "ok"
    return (isinstance(data, dict) and data.get("object") == "chat.completion"
            and data["choices"][0]["message"]["content"] == "ok")


# ====================================================================== load generator (subprocess)
async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    if length is None:
        raise ValueError("response without Content-Length")
    return status, await reader.readexactly(length)


def run_load(url: str, kind: str, concurrency: int, warmup_s: float, duration_s: float) -> dict[str, Any]:
    host, port_text = url.split("//", 1)[1].rsplit(":", 1)
    body = json.dumps(BODIES[kind]).encode()
    request = (f"POST {PATHS[kind]} HTTP/1.1\r\nHost: {host}:{port_text}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    latencies: list[float] = []
    counts = {"ok": 0, "errors": 0}
    samples: list[str] = []

    async def worker(window: tuple[float, float]) -> None:
        start, end = window
        reader, writer = await asyncio.open_connection(host, int(port_text))
        try:
            while time.perf_counter() < end:
                t0 = time.perf_counter()
                writer.write(request)
                status, data = await asyncio.wait_for(_read_response(reader), REQUEST_TIMEOUT_S)
                t1 = time.perf_counter()
                if status == 200 and answer_ok(kind, json.loads(data)):
                    counts["ok"] += 1
                    if start <= t0 and t1 <= end:
                        latencies.append(t1 - t0)
                else:
                    counts["errors"] += 1
                    if len(samples) < 3:
                        samples.append(f"HTTP {status}: {data[:200]!r}")
        finally:
            writer.close()

    async def main() -> None:
        now = time.perf_counter()
        window = (now + warmup_s, now + warmup_s + duration_s)
        await asyncio.gather(*(worker(window) for _ in range(concurrency)))

    asyncio.run(main())
    return {"latencies": latencies, "ok": counts["ok"], "errors": counts["errors"], "samples": samples,
            "window_s": duration_s}


# ====================================================================== orchestration
@dataclass
class Door:
    kind: str
    latencies: list[float] = field(default_factory=list)
    round_rps: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    samples: list[str] = field(default_factory=list)
    window_s: float = 0.0

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.window_s if self.window_s else 0.0


def load_once(door: Door, server: u.Server, env: dict[str, str], concurrency: int, warmup: float,
              duration: float) -> None:
    cmd = [u.PYTHON, __file__, "--load", server.url, door.kind, "--concurrency", str(concurrency),
           "--warmup", str(warmup), "--duration", str(duration)]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    watchdog = threading.Timer(warmup + duration + REQUEST_TIMEOUT_S + 60, proc.kill)  # only against a hang
    watchdog.daemon = True
    watchdog.start()
    try:
        out, err = proc.communicate()
    finally:
        watchdog.cancel()
    if proc.returncode != 0 or not out.strip():
        raise RuntimeError(f"load generator failed (exit {proc.returncode}):\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    door.latencies.extend(result["latencies"])
    door.round_rps.append(len(result["latencies"]) / result["window_s"])
    door.window_s += result["window_s"]
    door.ok += result["ok"]
    door.errors += result["errors"]
    door.samples.extend(result["samples"])


def count_executions(server: u.Server, source: str) -> int:
    total, before = 0, None
    while True:
        query = f"/api/executions?env=production&agent={AGENT}&source={source}&status=succeeded&limit=10000"
        if before is not None:
            query += f"&before={before}"
        status, page = u.request_json(server.url, "GET", query, token=server.token, timeout=120)
        if status != 200:
            raise RuntimeError(f"GET {query} answered {status}: {page}")
        total += len(page)
        if len(page) < 10000:
            return total
        before = page[-1]["id"]


def orchestrate(args: argparse.Namespace) -> int:
    duration = args.duration if args.duration is not None else (2.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    rounds = max(1, args.rounds if args.rounds is not None else (1 if args.quick else 5))
    concurrency = max(1, args.concurrency)
    print(f"# rf OpenAI-compatible throughput — {time.strftime('%Y-%m-%d %H:%M')} — {u.machine()}")
    print(f"# load: 1 process, {concurrency} keep-alive connections, {warmup:g} s warm-up + {duration:g} s measured, "
          f"{rounds} round(s) per door, order alternating (native openai, openai native, ...)")
    print(f"# before: {u.load_note()}")
    doors = (Door("native"), Door("openai"))
    with tempfile.TemporaryDirectory(prefix="rf-bench-openai-") as tmp_name:
        tmp = Path(tmp_name)
        env = u.bench_env(tmp / "pycache")
        root = u.make_workspace(tmp, env, agents={AGENT: AGENT_FILES}, promote=[AGENT], deploy_hello=False)
        server = u.start_rf_server(root, env)
        try:
            for door in doors:  # one checked call each (the first also starts the agent's worker)
                status, data = u.request_json(server.url, "POST", PATHS[door.kind], BODIES[door.kind])
                if status != 200 or not answer_ok(door.kind, data):
                    raise RuntimeError(f"{door.kind} answered {status}: {data}")
                door.ok += 1
            for i in range(rounds):
                for door in doors if i % 2 == 0 else doors[::-1]:
                    load_once(door, server, env, concurrency, warmup, duration)
            recorded = {door.kind: count_executions(server, SOURCES[door.kind]) for door in doors}
        finally:
            server.stop()
    print(f"# after: {u.load_note(flag_busy=False)}")
    print()
    print(u.table(["door", "req/s", "p50 ms", "p99 ms", "requests", "errors"], [
        [f"{d.kind} ({PATHS[d.kind]})", f"{d.rps:.0f}", f"{u.percentile(d.latencies, 50) * 1000:.2f}",
         f"{u.percentile(d.latencies, 99) * 1000:.2f}", str(len(d.latencies)), str(d.errors)] for d in doors]))
    print()
    native, chat = doors
    ok = True
    for d in doors:
        if d.errors:
            ok = False
            print(f"WARN: {d.errors} failed request(s) to {d.kind}, e.g. {d.samples[:2]}")
    pairs = [o / n for o, n in zip(chat.round_rps, native.round_rps, strict=False) if n > 0]
    pooled = chat.rps / native.rps if native.rps else 0.0
    ratio = u.median(pairs) if len(pairs) >= 3 else pooled
    how = (f"median of {len(pairs)} rounds (each {', '.join(f'{r:.0%}' for r in pairs)}; pooled {pooled:.0%})"
           if len(pairs) >= 3 else "pooled over the rounds")
    verdict = "PASS" if ratio >= RATIO_TARGET else "WARN"
    ok = ok and verdict == "PASS"
    print(f"{verdict}: openai/native throughput = {ratio:.0%} (target ≥ {RATIO_TARGET:.0%}), {how}")
    for d in doors:
        if recorded[d.kind] == d.ok:
            print(f"PASS: {d.kind}: production executions recorded with source {SOURCES[d.kind]} = {d.ok} = "
                  "successful requests sent")
        else:
            ok = False
            print(f"WARN: {d.kind}: {recorded[d.kind]} production executions recorded with source "
                  f"{SOURCES[d.kind]}, {d.ok} successful requests sent")
    if not ok:
        print("(some figures missed their target; see the WARN lines above)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one 2 s round per door")
    parser.add_argument("--duration", type=float, default=None, help="measured seconds per round (default 5)")
    parser.add_argument("--warmup", type=float, default=None, help="warm-up seconds per round (default 1)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per door (default 5, quick 1)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent keep-alive connections (default 8)")
    parser.add_argument("--load", nargs=2, metavar=("URL", "KIND"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.load:
        result = run_load(args.load[0], args.load[1], max(1, args.concurrency),
                          args.warmup if args.warmup is not None else 1.0,
                          args.duration if args.duration is not None else 5.0)
        print(json.dumps(result), flush=True)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
