"""The request guard's cost per request, in process: Guard(app) vs app alone.

Run: .venv/bin/python bench/guard.py [--n N] [--rounds R]

The inner app is a trivial ASGI app that answers 200 at once, so the
difference between the two is what the guard adds to every request rf
serves (one pass over the headers: Host, Origin, content type, the
endpoint-key check when keys are required). Both are driven by the same
loop with the headers a real client sends; rounds alternate (A B B A …) and
the median per-request time of each is printed, with the difference in µs
and the ratio. For the whole-server effect, bench/invoke.py measures the
endpoint against a bare echo app (the guard is in front of rf there too).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rf.server.guard import Guard


class _Keys:
    def check_endpoint_key(self, env: str, presented: str) -> bool:
        return presented == "rf_prd_key"


async def _inner(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def _scope(auth: bool) -> dict[str, Any]:
    headers = [(b"host", b"127.0.0.1:7410"), (b"user-agent", b"python-httpx/0.28"), (b"accept", b"*/*"),
               (b"accept-encoding", b"gzip, deflate"), (b"connection", b"keep-alive"),
               (b"content-type", b"application/json"), (b"content-length", b"27")]
    if auth:
        headers.append((b"authorization", b"Bearer rf_prd_key"))
    return {"type": "http", "method": "POST", "path": "/production/agents/echo", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 7410)}


async def _time(app: Any, scope: dict[str, Any], n: int) -> float:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    start = time.perf_counter()
    for _ in range(n):
        await app(scope, receive, send)
    return (time.perf_counter() - start) / n


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cases = [
        ("open endpoint (loopback default)", Guard(_inner, services=_Keys(), token="t"), _scope(False)),
        ("endpoint key required", Guard(_inner, services=_Keys(), token="t", require_keys=True), _scope(True)),
    ]
    for label, guarded, scope in cases:
        bare_t: list[float] = []
        guard_t: list[float] = []
        for r in range(args.rounds):
            order = [(_inner, bare_t), (guarded, guard_t)]
            for app, out in order if r % 2 == 0 else order[::-1]:
                out.append(await _time(app, scope, args.n))
        bare, guard = statistics.median(bare_t), statistics.median(guard_t)
        print(f"{label:34s} bare {bare * 1e6:6.2f} µs  guarded {guard * 1e6:6.2f} µs  "
              f"guard adds {(guard - bare) * 1e6:5.2f} µs per request (×{guard / bare:.2f} of a no-op app)")


if __name__ == "__main__":
    asyncio.run(main())
