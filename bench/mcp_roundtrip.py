"""MCP tool call round trip over streamable HTTP: ``/production/mcp`` on a real ``rf serve``.

Run: .venv/bin/python bench/mcp_roundtrip.py [--calls N] [--quick]

A throw-away workspace with a trivial ``echo`` agent (deployed and promoted), a real
``rf serve --port 0``, and the official ``mcp`` client (``ClientSession`` over
``streamable_http_client``) in this process: one session, initialized once, then N
sequential ``tools/call`` of ``echo`` (each a POST answered with JSON; each recorded as a
production execution with the source ``mcp``). Printed: p50, p90 and p99 of the round
trip, next to the same agent called N times through the native endpoint
(``POST /production/agents/echo``, one keep-alive connection) in the same run, so the
MCP layer's own cost reads as the difference. A ``tools/list`` round trip is timed too.

The first MCP request of a server imports the SDK (the server does not pay for it at
start-up); it is not counted (warm-up calls precede both measurements). The number of
production executions with the source ``mcp`` is checked against the calls made.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import (
    bench_env,
    load_note,
    machine,
    make_workspace,
    median,
    percentile,
    request_json,
    start_rf_server,
    table,
)

ECHO = {"agent.toml": 'description = "Echoes its input"\ntimeout_s = 10\n',
        "agent.py": "def handle(input, ctx):\n    return input\n"}


def _ms(values: list[float]) -> list[str]:
    return [f"{percentile(values, q) * 1000:.2f}" for q in (50, 90, 99)]


async def measure_mcp(url: str, calls: int, warmup: int) -> tuple[list[float], list[float], list[str]]:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    call_times: list[float] = []
    list_times: list[float] = []
    ids: list[str] = []
    async with streamable_http_client(f"{url}/production/mcp") as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        for i in range(warmup):
            await session.call_tool("echo", {"n": -i})
        for _ in range(max(calls // 10, 5)):
            start = time.perf_counter()
            await session.list_tools()
            list_times.append(time.perf_counter() - start)
        for i in range(calls):
            start = time.perf_counter()
            result = await session.call_tool("echo", {"n": i})
            call_times.append(time.perf_counter() - start)
            if result.is_error or result.structured_content != {"n": i}:
                raise RuntimeError(f"unexpected tool result: {result}")
            ids.append(result.meta["rf/execution_id"] if result.meta else "")
    return call_times, list_times, ids


def measure_endpoint(host: str, port: int, calls: int, warmup: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    times: list[float] = []
    try:
        for i in range(warmup + calls):
            body = json.dumps({"input": {"n": i}})
            start = time.perf_counter()
            conn.request("POST", "/production/agents/echo", body=body, headers={"content-type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            elapsed = time.perf_counter() - start
            if resp.status != 200 or json.loads(data)["output"] != {"n": i}:
                raise RuntimeError(f"unexpected answer {resp.status}: {data[:200]!r}")
            if i >= warmup:
                times.append(elapsed)
    finally:
        conn.close()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=500, help="tool calls measured (default 500)")
    parser.add_argument("--quick", action="store_true", help="100 calls")
    args = parser.parse_args(argv)
    calls = 100 if args.quick else args.calls
    warmup = 20
    import anyio

    print(f"# MCP round trip — {machine()}")
    print(f"# {load_note()}")
    with tempfile.TemporaryDirectory(prefix="rf-bench-mcp-") as tmp:
        env = bench_env(Path(tmp) / "pycache")
        root = make_workspace(Path(tmp), env, agents={"echo": ECHO}, promote=["echo"], deploy_hello=False)
        server = start_rf_server(root, env)
        try:
            first = time.perf_counter()
            mcp_times, list_times, ids = anyio.run(measure_mcp, server.url, calls, warmup)
            total = time.perf_counter() - first
            native = measure_endpoint(server.host, server.port, calls, warmup)
            status, executions = request_json(server.url, "GET", "/api/executions?env=production&source=mcp&limit=10000",
                                              token=server.token)
        finally:
            server.stop()
    rows = [["tools/call over /production/mcp", *_ms(mcp_times)],
            ["POST /production/agents/echo", *_ms(native)],
            ["tools/list over /production/mcp", *_ms(list_times)]]
    print(table(["round trip (ms)", "p50", "p90", "p99"], rows))
    overhead = (median(mcp_times) - median(native)) * 1000
    print(f"\nMCP tool call p50 {median(mcp_times) * 1000:.2f} ms = native p50 {median(native) * 1000:.2f} ms "
          f"+ {overhead:.2f} ms of MCP (JSON-RPC, the SDK's stateless transport); "
          f"{calls} calls, {total:.1f} s with warm-up and the SDK's first import")
    recorded = {e["id"] for e in executions} if status == 200 and isinstance(executions, list) else set()
    missing = [i for i in ids if i not in recorded]
    if missing:
        print(f"WARN: {len(missing)} tool calls have no production execution with source mcp")
        return 1
    print(f"OK: every measured tool call is a production execution with source mcp ({len(ids)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
