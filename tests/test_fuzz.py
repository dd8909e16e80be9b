"""No input makes rf serve answer 5xx: a seeded, bounded fuzz run over every management
route (typed values from each route's body schema, and wrong ones), the agent endpoints,
session reads and webhooks, against a real server. The long run: bench/fuzz_api.py."""

from __future__ import annotations

import itertools
import random
from typing import Any

import httpx
import pytest
from fuzzcases import Case, api_cases, encode, endpoint_cases

from conftest import run_rf, run_rf_here, start_server
from rf import api
from rf.server.app import RequestSpec
from rf.services import Services

#: cases per run (management routes round-robin, then endpoints); a seed per CI run is fixed
API_CASES = 1500
ENDPOINT_CASES = 400
SKIP = {"kb_upload_piece"}  # (covered: it is a multipart-free JSON route too, but it only stores pieces)


def request_specs() -> dict[str, RequestSpec]:
    return {r.name: RequestSpec(r, getattr(Services, r.name)) for r in api.ROUTES if r.name not in SKIP}


def send(client: httpx.Client, case: Case, token: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if case.auth == "token" else {}
    if case.body is not None or case.method in ("POST", "PATCH", "PUT", "DELETE"):
        headers["content-type"] = "application/json"
        content = encode(case.body).encode() if case.body is not None else b"{}"
        return client.request(case.method, case.path, content=content, headers=headers, params=case.query)
    return client.request(case.method, case.path, headers=headers, params=case.query)


@pytest.mark.parametrize("seed", [20261206, 3])
def test_no_request_gets_a_server_error(ws: Any, seed: int) -> None:
    root = ws.root
    for args in (("agents", "deploy", "hello"), ("agents", "promote", "hello", "--yes"),
                 ("prompts", "create", "greeting", "--text", "hi {{name}}"),
                 ("connectors", "create", "crm", "--base-url", "http://127.0.0.1:9/api")):
        r = run_rf_here(*args, cwd=root)  # (the setup, in-process: the server under test is a real process)
        assert r.returncode == 0, (args, r.stderr)
    srv = start_server(root)
    rng = random.Random(seed)
    known = ["hello", "crm", "greeting"]
    failures: list[str] = []
    statuses: dict[int, int] = {}
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            cases = itertools.chain(itertools.islice(api_cases(request_specs(), rng, known), API_CASES),
                                    itertools.islice(endpoint_cases(rng, known), ENDPOINT_CASES))
            for case in cases:
                r = send(client, case, srv.token)
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code >= 500 and not _agent_failure(r):
                    failures.append(f"{r.status_code} {case.method} {case.path} query={case.query} "
                                    f"body={encode(case.body)[:300]} -> {r.text[:300]}")
            assert client.get("/api/health").status_code == 200
    finally:
        srv.stop()
    assert not failures, f"{len(failures)} server errors (statuses {statuses}):\n" + "\n".join(failures[:20])
    assert sum(statuses.values()) == API_CASES + ENDPOINT_CASES
    assert statuses.get(200, 0) > 100  # the fuzz reaches real work, not only refusals


def _agent_failure(r: httpx.Response) -> bool:
    """A 500 that is the *agent's* failure (an execution id and its error), not the server's."""
    try:
        body = r.json()
    except ValueError:
        return False
    return r.status_code == 500 and isinstance(body, dict) and "execution_id" in body and body.get("status") == "failed"


DEEP_AGENT = """
def handle(input, ctx):
    value = "bottom"
    for _ in range(int(input.get("depth", 1000))):
        value = [value]
    ctx.memory.set("deep", value) if input.get("memory") else None
    return {"deep": value}
"""


def test_an_agents_deeply_nested_output_never_breaks_a_list(ws: Any) -> None:
    """What an agent returns is its business: a value nested 1,000 levels is recorded, and
    every reader (executions list/show, traces, the API) still answers."""
    from conftest import write_agent

    root = ws.root
    write_agent(root, "deep", code=DEEP_AGENT, toml='description = "deep output"\n')
    assert run_rf_here("agents", "deploy", "deep", cwd=root).returncode == 0
    srv = start_server(root)
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as client:
            r = client.post("/staging/agents/deep", json={"input": {"depth": 1000}})
            assert r.status_code in (200, 500), r.text
            ex_id = r.json()["execution_id"]
            for path in ("/api/executions?env=staging", f"/api/executions/{ex_id}", f"/api/traces/{ex_id}",
                         "/api/traces?env=staging"):
                answer = client.get(path, headers={"authorization": f"Bearer {srv.token}"})
                assert answer.status_code == 200, (path, answer.text[:300])
        for args in (("executions", "list", "--env", "staging"), ("executions", "show", ex_id),
                     ("traces", "show", ex_id)):
            out = run_rf(*args, cwd=root)
            assert out.returncode == 0, (args, out.stderr)
            assert "internal error" not in out.stderr
    finally:
        srv.stop()
