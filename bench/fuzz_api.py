"""A long fuzz run against a real `rf serve`: every management route, the agent endpoints,
session reads and webhooks (the generator of tests/test_fuzz.py, tests/fuzzcases.py).
Prints cases tried, answers by status, and every 5xx with the request that caused it.

    .venv/bin/python bench/fuzz_api.py --cases 30000 --seed 7
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fuzzcases import Case, api_cases, encode, endpoint_cases  # noqa: E402

from rf import api  # noqa: E402
from rf.config import init_workspace  # noqa: E402
from rf.server.app import RequestSpec  # noqa: E402
from rf.services import Services  # noqa: E402

RF = [str(Path(sys.executable).parent / "rf")]
HELLO = "def handle(input, ctx):\n    return {'echo': input}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=20000, help="requests in all (default 20000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--endpoint-share", type=float, default=0.2, help="share of endpoint/webhook cases")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rf-fuzz-") as tmp:
        ws = init_workspace(Path(tmp) / "ws")
        agent = ws.root / "agents" / "hello"
        agent.mkdir(parents=True)
        (agent / "agent.toml").write_text('description = "echo"\n')
        (agent / "agent.py").write_text(HELLO)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
        for cmd in (("agents", "deploy", "hello"), ("agents", "promote", "hello", "--yes"),
                    ("prompts", "create", "greeting", "--text", "hi {{name}}"),
                    ("connectors", "create", "crm", "--base-url", "http://127.0.0.1:9/api")):
            subprocess.run([*RF, *cmd], cwd=ws.root, env=env, check=True, capture_output=True)
        proc = subprocess.Popen([*RF, "serve", "--port", "0"], cwd=ws.root, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        info_file = ws.root / ".rf" / "server.json"
        while not info_file.exists():
            time.sleep(0.05)
        time.sleep(0.5)
        info = json.loads(info_file.read_text())
        specs = {r.name: RequestSpec(r, getattr(Services, r.name)) for r in api.ROUTES}
        rng = random.Random(args.seed)
        known = ["hello", "crm", "greeting"]
        n_endpoint = int(args.cases * args.endpoint_share)
        cases = itertools.chain(itertools.islice(api_cases(specs, rng, known), args.cases - n_endpoint),
                                itertools.islice(endpoint_cases(rng, known), n_endpoint))
        statuses: dict[int, int] = {}
        failures: list[str] = []
        started = time.monotonic()
        try:
            with httpx.Client(base_url=info["url"], timeout=60) as client:
                for case in cases:
                    r = send(client, case, info["token"])
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code >= 500 and not ('"execution_id"' in r.text and '"failed"' in r.text):
                        failures.append(f"{r.status_code} {case.method} {case.path} query={case.query} "
                                        f"body={encode(case.body)[:200]} -> {r.text[:200]}")
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    tried = sum(statuses.values())
    print(f"cases tried: {tried} in {time.monotonic() - started:.0f} s (seed {args.seed})")
    print("answers by status: " + ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())))
    print(f"server errors (5xx, not an agent's own failure): {len(failures)}")
    for line in failures[:50]:
        print("  " + line)
    return 1 if failures else 0


def send(client: httpx.Client, case: Case, token: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if case.auth == "token" else {}
    if case.body is not None or case.method in ("POST", "PATCH", "PUT", "DELETE"):
        headers["content-type"] = "application/json"
        content = encode(case.body).encode() if case.body is not None else b"{}"
        return client.request(case.method, case.path, content=content, headers=headers, params=case.query)
    return client.request(case.method, case.path, headers=headers, params=case.query)


if __name__ == "__main__":
    raise SystemExit(main())
