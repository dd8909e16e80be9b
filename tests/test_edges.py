"""Edges of the server and the services: what a client can send that once answered 5xx.

A real ``rf serve`` (subprocess) for the HTTP cases: very long or invalid names in paths,
deeply nested JSON bodies (both invoke paths and the management API), limits out of range.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from conftest import ServerProc, run_rf, run_rf_here
from rf import api
from rf.config import NAME_RULE
from rf.jsonfast import MAX_DEPTH

LONG = "a" * 300


def _deploy(ws: Any) -> None:
    r = run_rf_here("agents", "deploy", "hello", cwd=ws.root)
    assert r.returncode == 0, r.stderr


def _auth(server: ServerProc) -> dict[str, str]:
    return {"authorization": f"Bearer {server.token}", "content-type": "application/json"}


def _nested(depth: int) -> Any:
    """A value of *depth* levels of arrays (``[[["x"]]]`` is 3)."""
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


# ---------------------------------------------------------------- names in paths
def test_a_long_or_invalid_agent_name_is_404_with_the_rule(ws: Any, server: ServerProc) -> None:
    """A 300-character agent name once reached the file system (ENAMETOOLONG: 500). A name
    that fails the naming rule cannot exist: 404 unknown agent, the rule as the hint, the
    name cut short in the message."""
    _deploy(ws)
    h = _auth(server)
    cases = [("GET", f"/api/agents/{LONG}"), ("GET", f"/api/agents/{LONG}/history"),
             ("GET", f"/api/agents/{LONG}/diff"), ("POST", f"/api/agents/{LONG}/promote"),
             ("POST", f"/api/invoke/staging/{LONG}"), ("GET", f"/staging/agents/{LONG}"),
             ("GET", f"/production/agents/{LONG}"), ("POST", f"/staging/agents/{LONG}"),
             ("POST", f"/production/agents/{LONG}"), ("GET", "/api/agents/Bad%20Name")]
    for method, path in cases:
        r = httpx.request(method, server.url + path, headers=h, content=b"{}" if method == "POST" else None)
        assert r.status_code == 404, (method, path, r.text)
        error = r.json()["error"]
        assert error["code"] == "not_found" and error["message"].startswith("unknown agent"), error
        assert error["hint"] == f"not a valid agent name: {NAME_RULE}"
        assert len(error["message"]) < 120, error["message"]  # 64 characters of the name, then its length
    # The streaming endpoint answers before its stream starts.
    r = httpx.post(f"{server.url}/staging/agents/{LONG}", content=b'{"input": 1}',
                   headers={**h, "accept": "text/event-stream"})
    assert r.status_code == 404 and "(300 characters)" in r.json()["error"]["message"]
    # A valid name that is simply unknown keeps its own hint.
    r = httpx.get(f"{server.url}/api/agents/nope", headers=h)
    assert r.status_code == 404 and r.json()["error"]["hint"] == "see the deployed agents with: rf agents list"


def test_no_route_answers_5xx_for_a_300_character_path_parameter(ws: Any, server: ServerProc) -> None:
    """Every management route with a path parameter, and the environment endpoints, given a
    300-character value: a 4xx answer, never 5xx."""
    _deploy(ws)
    h = _auth(server)
    paths = [("GET", "/staging/agents/V"), ("POST", "/staging/agents/V"), ("GET", "/staging/agents/V/sessions/V"),
             ("POST", "/staging/hooks/V")]
    for r in api.ROUTES:
        path = r.path
        for p in r.path_params():
            path = path.replace("{" + p + "}", "staging" if p == "env" else "V")
        if path != r.path:
            paths.append((r.method, "/api" + path))
    failures = []
    for method, path in paths:
        resp = httpx.request(method, server.url + path.replace("V", LONG), headers=h,
                             content=None if method == "GET" else b"{}", timeout=30)
        if resp.status_code >= 500:
            failures.append((resp.status_code, method, path, resp.text[:200]))
    assert not failures


# ---------------------------------------------------------------- deeply nested JSON
def test_deeply_nested_json_is_400_at_the_edge(ws: Any, server: ServerProc) -> None:
    """A body nesting more than MAX_DEPTH levels of objects and arrays is refused with 400
    (it once answered 500 RecursionError at ~1,000 levels, and at 500 levels was recorded, after
    which `rf executions list` failed): on the fast path, on the streaming path and on the
    management API. MAX_DEPTH levels in all (the {"input": ...} object counts) still run."""
    _deploy(ws)
    h = _auth(server)
    url = f"{server.url}/staging/agents/hello"
    ok = httpx.post(url, content=json.dumps({"input": _nested(MAX_DEPTH - 1)}), headers=h)
    assert ok.status_code == 200, ok.text

    for depth in (MAX_DEPTH, 500, 1000, 100_000):  # + 1 for the body's own object
        body = '{"input": ' + "[" * depth + "]" * depth + "}"
        for extra in ({}, {"accept": "text/event-stream"}):
            r = httpx.post(url, content=body, headers={**h, **extra})
            assert r.status_code == 400, (depth, extra, r.text[:300])
            error = r.json()["error"]
            assert error["code"] == "usage"
            assert f"more than {MAX_DEPTH} levels deep" in error["message"], error
            assert str(MAX_DEPTH) in error["hint"]
    # The management API decodes its bodies the same way.
    r = httpx.post(f"{server.url}/api/invoke/staging/hello", headers=h,
                   content=json.dumps({"input": _nested(200)}))
    assert r.status_code == 400 and "levels deep" in r.json()["error"]["message"]

    listed = run_rf("executions", "list", "--json", cwd=ws.root)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1  # only the run within the limit was recorded


def test_loads_limited_counts_only_real_nesting() -> None:
    """Brackets inside strings are not nesting; wide shallow values pass; the limit is exact."""
    from rf.jsonfast import TooDeep, loads_limited

    assert loads_limited(json.dumps({"a": ["[" * 500, "{" * 500]}).encode())["a"][0] == "[" * 500
    wide = [{"k": [1, 2, {"x": None}]} for _ in range(2000)]
    assert loads_limited(json.dumps(wide).encode()) == wide
    assert loads_limited(json.dumps(_nested(MAX_DEPTH)).encode()) == _nested(MAX_DEPTH)
    mixed = [[1, [2]]] * 100 + [{"k": _nested(MAX_DEPTH - 1)}]  # MAX_DEPTH + 1 deep, far down the body
    with pytest.raises(TooDeep):
        loads_limited(json.dumps(mixed).encode())
    assert loads_limited(b"5") == 5


# ---------------------------------------------------------------- limits
def test_a_limit_out_of_range_is_400_stating_the_range(server: ServerProc) -> None:
    """Every list with a limit answers 400 naming its range 1..N and the value given (the API
    caller never sent a --limit flag); a limit never reaches the database."""
    h = _auth(server)
    gets = {"/api/executions": 10_000, "/api/traces": 10_000, "/api/sessions": 10_000, "/api/spans": 1_000_000}
    for limit in (0, -1, 10**30):
        for path, most in gets.items():
            r = httpx.get(f"{server.url}{path}", params={"limit": str(limit)}, headers=h)
            assert r.status_code == 400, (path, r.text)
            message = r.json()["error"]["message"]
            assert message.startswith(f"limit must be a whole number between 1 and {most}, not "), message
        r = httpx.post(f"{server.url}/api/memory/list", json={"limit": limit}, headers=h)
        assert r.status_code == 400
        assert r.json()["error"]["message"] == (
            f"limit must be a whole number between 1 and 100000, not {limit if limit < 10**6 else str(limit)[:24] + '…'}")


# ---------------------------------------------------------------- rf.toml [llm]: one key list
@pytest.mark.parametrize(("tail", "expected", "hint"), [
    ('[llm]\ndefualt = "mock"\n', "unknown key 'defualt' in [llm] (did you mean 'default'?)",
     "[llm] takes: default, timeout_s, mock"),
    ('[llm.mock]\nrulez = []\n', "unknown key 'rulez' in [llm.mock] (did you mean 'rules'?)", "[llm.mock] takes: rules"),
    ('[[llm.mock.rules]]\nmatch = "a"\nreplly = "b"\n',
     "unknown key 'replly' in [[llm.mock.rules]] #1 (did you mean 'reply'?)", "match, regex, reply, tool_call"),
    ('[[llm.mock.rules]]\nmatch = "a"\ntool_call = { name = "t", argumnets = { id = "1" } }\n',
     "unknown key 'argumnets' in [[llm.mock.rules]] #1 tool_call (did you mean 'arguments'?)", "name, arguments"),
])
def test_llm_settings_reread_at_run_time_check_the_one_key_list(ws: Any, tail: str, expected: str,
                                                                  hint: str) -> None:
    """[llm] is re-read by a running Services whenever rf.toml changes (rf.services.providers);
    it and the mock rules (rf.llm.mock) use RF_TOML_KEYS through check_keys, like the start-up
    check: the same did-you-mean, and a typo in a tool_call is no longer let through."""
    from rf.client import open_local
    from rf.errors import WorkspaceError

    backend = open_local(ws)
    try:
        svc = backend.services
        assert svc.llm_settings().default == "mock"
        path = ws.root / "rf.toml"
        path.write_text(path.read_text() + "\n" + tail)
        with pytest.raises(WorkspaceError) as info:
            svc.llm_settings()
        assert expected in info.value.message
        assert info.value.hint is not None and hint in info.value.hint
    finally:
        backend.close()


def test_mock_rules_parsed_alone_check_the_one_key_list() -> None:
    from rf.errors import WorkspaceError
    from rf.llm.mock import parse_rules

    with pytest.raises(WorkspaceError) as info:
        parse_rules({"mock": {"rules": [{"match": "a", "reply": "b", "regx": True}]}})
    assert "unknown key 'regx' in [[llm.mock.rules]] #1 (did you mean 'regex'?)" in info.value.message
    assert parse_rules({"mock": {"rules": [{"match": "a", "tool_call": {"name": "t", "arguments": {"x": 1}}}]}})


# ---------------------------------------------------------------- trace modes shown
def test_agents_show_prints_each_environments_trace_mode(ws: Any) -> None:
    """``[trace]`` of each environment's head commit: one line per environment in ``rf agents
    show`` (and ``trace`` in --json, and in get_agent over HTTP); list_agents reads no commit."""
    from conftest import HELLO_TOML, start_server, write_agent

    write_agent(ws.root, "hello", toml=HELLO_TOML + '[trace]\nstaging = "full"\nproduction = "minimal"\n')
    _deploy(ws)
    shown = run_rf("agents", "show", "hello", cwd=ws.root)
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert lines.count("trace full") == 1 and "trace minimal" not in lines  # production has no commit yet
    assert lines.index("trace full") == lines.index(next(x for x in lines if x.startswith("POST") and "/staging/" in x)) + 1
    r = run_rf_here("agents", "promote", "hello", "--yes", cwd=ws.root)
    assert r.returncode == 0, r.stderr
    # Staging's new commit says production = "full": production runs its own commit (minimal).
    write_agent(ws.root, "hello", toml=HELLO_TOML + '[trace]\nproduction = "full"\n')
    _deploy(ws)

    server = start_server(ws.root)  # the CLI goes through the running server: the field travels as JSON
    try:
        shown = run_rf("agents", "show", "hello", cwd=ws.root)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        staging_part, production_part = out.split("\n  production", 1)
        assert "trace standard" in staging_part and "trace minimal" in production_part, out
        assert "full" not in out
        data = json.loads(run_rf_here("agents", "show", "hello", "--json", cwd=ws.root).stdout)
        assert data["trace"] == {"staging": "standard", "production": "minimal"}
        h = _auth(server)
        assert httpx.get(f"{server.url}/api/agents/hello", headers=h).json()["trace"] == data["trace"]
        assert httpx.get(f"{server.url}/api/agents", headers=h).json()[0]["trace"] == {}
    finally:
        server.stop()
