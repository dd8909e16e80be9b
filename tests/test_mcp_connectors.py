"""MCP servers as connectors (issue 19 item 3): a connector of kind ``mcp`` whose resources are
an MCP server's tools, called from agent code like any connector resource.

Against real MCP servers written with the official ``mcp`` SDK (tests/mcp_tool_server.py,
streamable HTTP on 127.0.0.1), through the real CLI (``rf test``, ``rf releases``) and a real
``rf serve`` where it is a user's workflow. Each test runs one or two `rf` commands as real
subprocesses (run_rf: the credentials piped on stdin among them), the rest through the same entry
point in-process (run_rf_here: the same output and exit codes, no interpreter start)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp_tool_server import serve

from conftest import run_rf, run_rf_here, start_server, write_agent
from rf.client import HttpBackend, LocalBackend, open_local
from rf.config import snapshot_dir
from rf.errors import ProductionReadOnly, UsageError

TOKEN = "mcp-s3cret-token-do-not-leak"

CALLER_TOML = 'description = "calls MCP tools"\nentrypoint = "agent:handle"\ntimeout_s = 20\nconnectors = ["tools"]\n'
CALLER_PY = '''
from rf import ConnectorError


def handle(input, ctx):
    if "steps" in input:  # several calls in one run
        return [handle(step, ctx) for step in input["steps"]]
    if input.get("op") == "describe":
        tool = ctx.connectors.tool("tools", input["tool"])
        return {"name": tool.name, "description": tool.description, "parameters": tool.parameters,
                "result": tool(**input.get("args", {}))}
    try:
        return {"value": ctx.connectors.call("tools", input["tool"], **input.get("args", {}))}
    except ConnectorError as exc:
        return {"caught": str(exc), "body": exc.body}
'''


def rf_ok(*args: str, cwd: Path, input: str | None = None, run: Any = run_rf_here) -> str:
    """Run ``rf ARGS``; what it printed (stdout, then stderr, where messages go)."""
    r = run(*args, cwd=cwd, input=input)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout + r.stderr


def rf_json(*args: str, cwd: Path) -> Any:
    r = run_rf_here(*args, "--json", cwd=cwd)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return json.loads(r.stdout)


def run_test(root: Path, payload: dict[str, Any]) -> Any:
    """``rf test caller INPUT --json``: the staging run's output."""
    result = rf_json("test", "caller", json.dumps(payload), cwd=root)
    assert result["status"] == "succeeded", result
    return result["output"]


@pytest.fixture
def staging_server() -> Iterator[str]:
    with serve("staging", token=TOKEN) as url:
        yield url


@pytest.fixture
def local(ws: Any) -> Iterator[LocalBackend]:
    b = open_local(ws)
    try:
        yield b
    finally:
        b.close()


def test_tools_become_resources_and_rf_test_calls_them(ws: Any, staging_server: str) -> None:
    root = ws.root
    rf_ok("credentials", "set", "mcp-token", "--from-stdin", "--yes", cwd=root, input=TOKEN, run=run_rf)
    created = rf_json("connectors", "create", "tools", "--mcp", staging_server, "--auth", "bearer",
                      "--credential", "mcp-token", cwd=root)
    assert created["kind"] == "mcp" and created["base_url"] == staging_server
    resources = {r["slug"]: r for r in created["resources"]}
    assert sorted(resources) == ["add", "explode", "getweather", "lookup_order", "slow"]
    assert resources["add"]["description"] == "Add two integers."
    assert resources["add"]["params_schema"]["required"] == ["a", "b"]
    assert resources["add"]["params_schema"]["properties"]["a"]["type"] == "integer"
    assert resources["lookup_order"]["method"] == "MCP" and resources["lookup_order"]["path"] == "lookup_order"

    write_agent(root, "caller", CALLER_PY, CALLER_TOML)
    # structured content as is; text content JSON-decoded (the bearer credential got through: the
    # server refuses any request without it)
    added, looked_up, failed, described = run_test(root, {"steps": [
        {"tool": "add", "args": {"a": 2, "b": 3}},
        {"tool": "lookup_order", "args": {"order_id": "A7"}},
        {"tool": "explode", "args": {"reason": "on purpose"}},
        {"op": "describe", "tool": "add", "args": {"a": 1, "b": 1}},
    ]})
    assert added == {"value": {"result": 5}}
    assert looked_up == {"value": {"order": "A7", "status": "shipped", "server": "staging"}}
    # a tool's isError answer is a ConnectorError that agent code catches; its text is the body
    assert failed["caught"].startswith("connector tools.explode failed: the tool answered an error")
    assert "exploded: on purpose" in failed["body"]
    # ctx.connectors.tool: the LLM tool spec comes from the tool's description and input schema
    assert described["name"] == "tools__add" and described["description"] == "Add two integers."
    assert described["parameters"]["required"] == ["a", "b"] and described["result"] == {"result": 2}
    # arguments are checked against the tool's schema before any call
    bad = run_rf_here("test", "caller", json.dumps({"tool": "add", "args": {"a": 1}}), "--json", cwd=root)
    assert "missing parameter 'b'" in bad.stdout + bad.stderr

    # a wrong credential: the server answers 401, the error says which credential to check
    rf_ok("credentials", "set", "mcp-token", "--from-stdin", "--yes", cwd=root, input="wrong-token")
    denied = run_test(root, {"tool": "add", "args": {"a": 1, "b": 1}})
    assert denied["caught"].startswith("connector tools.add failed: HTTP 401")
    assert "rf credentials set mcp-token" in denied["caught"]
    assert "wrong-token" not in json.dumps(denied) and TOKEN not in json.dumps(denied)


def test_each_environment_calls_its_own_mcp_server_through_rf_serve(ws: Any) -> None:
    root = ws.root
    with serve("staging") as staging_url, serve("production", token=TOKEN) as production_url:
        rf_ok("credentials", "set", "prod-mcp", "--from-stdin", "--yes", cwd=root, input=TOKEN, run=run_rf)
        rf_ok("connectors", "create", "tools", "--mcp", staging_url, cwd=root)
        rf_ok("connectors", "edit", "tools", "--for", "production", "--base-url", production_url,
              "--auth", "bearer", "--credential", "prod-mcp", cwd=root)
        rf_ok("connectors", "publish", "tools", "--yes", cwd=root)
        write_agent(root, "caller", CALLER_PY, CALLER_TOML)
        rf_ok("agents", "deploy", "caller", "-m", "v1", cwd=root)
        rf_ok("agents", "promote", "caller", "--yes", cwd=root)
        server = start_server(root)
        try:
            b = HttpBackend(server.url, server.token, ws)
            payload = {"tool": "lookup_order", "args": {"order_id": "9"}}
            answers = {}
            for env in ("staging", "production"):
                ex = b.invoke(env, "caller", payload)
                assert ex.status == "succeeded", ex.error
                answers[env] = ex.output["value"]["server"]
                span = next(s for s in b.get_trace(ex.id).spans if s.name == "connectors.call")
                assert span.kind == "connector" and span.attributes["connector"] == "tools"
                assert span.attributes["tool"] == "lookup_order"
                assert span.attributes["url"] == (staging_url if env == "staging" else production_url)
                assert TOKEN not in json.dumps(span.attributes)
            assert answers == {"staging": "staging", "production": "production"}
            # production's instance has the same tools, its own server and credential
            prod = b.get_connector("tools", "production")
            assert prod.kind == "mcp" and prod.base_url == production_url and prod.credential == "prod-mcp"
            assert [r.slug for r in prod.resources] == ["add", "explode", "getweather", "lookup_order", "slow"]
        finally:
            server.stop()


def test_refresh_shows_a_changed_tool_schema_as_a_release_item(ws: Any) -> None:
    root = ws.root
    with serve("staging") as v1_url, serve("staging", variant="v2") as v2_url:
        rf_ok("connectors", "create", "tools", "--mcp", v1_url, cwd=root)
        mock = root / "mock.json"
        mock.write_text('{"order": "mocked"}')
        rf_ok("connectors", "resources", "edit", "tools", "lookup_order", "--mock-file", str(mock), cwd=root)
        rf_ok("connectors", "publish", "tools", "--yes", cwd=root)
        unchanged = rf_json("connectors", "refresh", "tools", cwd=root)["unchanged"]
        assert unchanged == ["add", "explode", "getweather", "lookup_order", "slow"]
        assert not [i for i in rf_json("releases", cwd=root) if i["name"] == "tools"]

        # staging's server now has a new version of lookup_order
        rf_ok("connectors", "edit", "tools", "--base-url", v2_url, cwd=root)
        text = rf_ok("connectors", "refresh", "tools", cwd=root)
        assert "0 added, 1 updated, 0 removed, 4 unchanged" in text and "~ lookup_order" in text
        items = {f"{i['kind']}:{i['name']}": i for i in rf_json("releases", cwd=root)}
        assert items["connector:tools"]["summary"] == "1 resource modified"
        diff = rf_ok("releases", "diff", "connector:tools", cwd=root, run=run_rf)
        assert "~ resource lookup_order" in diff and "~ schema:" in diff
        added = [line.strip() for line in diff.splitlines() if line.strip().startswith("+")]
        assert '+ "include_items": {' in [" ".join(a.split()) for a in added], diff
        staging = rf_json("connectors", "show", "tools", cwd=root)
        lookup = next(r for r in staging["resources"] if r["slug"] == "lookup_order")
        assert lookup["mock_response"] == {"order": "mocked"}  # a refresh keeps rf's own mock answer
        assert "include_items" in lookup["params_schema"]["properties"]
        production = rf_json("connectors", "show", "tools", "--env", "production", cwd=root)
        old = next(r for r in production["resources"] if r["slug"] == "lookup_order")
        assert "include_items" not in old["params_schema"]["properties"]  # until published

        # mock mode answers from the mock response, without calling the server
        rf_ok("connectors", "edit", "tools", "--mock", cwd=root)
        write_agent(root, "caller", CALLER_PY, CALLER_TOML)
        assert run_test(root, {"tool": "lookup_order", "args": {"order_id": "1"}}) == {"value": {"order": "mocked"}}


def test_mcp_connector_errors_are_clear(local: LocalBackend, ws: Any) -> None:
    b = local
    # a server that is not there: a clear usage error when creating, nothing stored
    with pytest.raises(UsageError) as err:
        b.create_connector("tools", "http://127.0.0.1:9/mcp", kind="mcp")
    assert "could not list the tools of MCP server" in str(err.value) and "could not connect" in str(err.value)
    assert err.value.hint and "running" in err.value.hint
    assert b.list_connectors() == []
    with serve("staging", token=TOKEN) as url:
        # the server wants a token: the error says how to give one
        with pytest.raises(UsageError) as err:
            b.create_connector("tools", url, kind="mcp")
        assert "HTTP 401" in str(err.value) and "--auth bearer --credential" in (err.value.hint or "")
        b.set_credential("mcp-token", TOKEN)
        b.create_connector("tools", url, auth="bearer", credential="mcp-token", kind="mcp")
        # its resources are the server's: rf refuses to add, edit or remove them
        with pytest.raises(UsageError, match="its resources are the server's tools") as err:
            b.add_resource("tools", "extra", "GET", "/x")
        assert "rf connectors refresh tools" in (err.value.hint or "")
        with pytest.raises(UsageError):
            b.edit_resource("tools", "add", description="changed")
        with pytest.raises(UsageError):
            b.remove_resource("tools", "add")
        # refresh is a staging edit; production changes by publishing
        with pytest.raises(ProductionReadOnly) as denied:
            b.refresh_connector("tools", env="production")
        assert "rf connectors publish tools" in (denied.value.hint or "")
    # only an MCP connector is refreshed from its server
    b.create_connector("crm", "http://127.0.0.1:9/api")
    with pytest.raises(UsageError, match="is an HTTP API") as err:
        b.refresh_connector("crm")
    assert "import-openapi" in (err.value.hint or "")
    with pytest.raises(UsageError, match="unknown connector kind"):
        b.create_connector("other", "http://127.0.0.1:9/x", kind="grpc")
    # the CLI: one of --base-url / --mcp, never a traceback
    r = run_rf("connectors", "create", "x", cwd=ws.root)
    assert r.returncode != 0 and "give one of --base-url URL (an HTTP API), --mcp URL" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_tool_named_like_no_slug_is_still_called(local: LocalBackend, ws: Any) -> None:
    """A tool whose name is not a resource slug (``getWeather``) gets a slug (``getweather``);
    agent code may name it either way. Exercised through the host, with the deployed agent."""
    b = local
    with serve("staging") as url:
        b.create_connector("tools", url, kind="mcp")
        write_agent(ws.root, "caller", CALLER_PY, CALLER_TOML)
        b.deploy("caller", snapshot_dir(ws.root / "agents" / "caller"), "v1", "ada")
        assert "getweather" in [r.slug for r in b.get_connector("tools").resources]
        for name in ("getweather", "getWeather"):
            ex = b.invoke("staging", "caller", {"tool": name, "args": {"city": "Oslo"}})
            assert ex.status == "succeeded" and ex.output == {"value": "sunny in Oslo"}, ex.error


def test_a_slow_tool_times_out_with_the_connector_timeout(local: LocalBackend, ws: Any) -> None:
    b = local
    with serve("staging") as url:
        b.create_connector("tools", url, kind="mcp", timeout_s=0.5)
        write_agent(ws.root, "caller", CALLER_PY, CALLER_TOML)
        b.deploy("caller", snapshot_dir(ws.root / "agents" / "caller"), "v1", "ada")
        ex = b.invoke("staging", "caller", {"tool": "slow", "args": {"seconds": 5}})
        assert ex.status == "succeeded", ex.error
        assert ex.output["caught"].startswith("connector tools.slow failed: timed out after 0.5 s")
        assert "rf connectors edit tools --timeout SECONDS" in ex.output["caught"]
        assert ex.duration_ms < 4000  # the call was abandoned, not waited out
        ok = b.invoke("staging", "caller", {"tool": "slow", "args": {"seconds": 0.01}})
        assert ok.output == {"value": "done"}, ok.error


def test_an_mcp_server_started_as_a_command_over_stdio(ws: Any, local: LocalBackend) -> None:
    import shlex
    import sys

    server = Path(__file__).with_name("mcp_tool_server.py")
    command = shlex.join([sys.executable, str(server), "--stdio", "--label", "stdio"])
    b = local
    c = b.create_connector("tools", "stdio:" + command, kind="mcp")
    assert [r.slug for r in c.resources] == ["add", "explode", "getweather", "lookup_order", "slow"]
    write_agent(ws.root, "caller", CALLER_PY, CALLER_TOML)
    b.deploy("caller", snapshot_dir(ws.root / "agents" / "caller"), "v1", "ada")
    ex = b.invoke("staging", "caller", {"steps": [{"tool": "lookup_order", "args": {"order_id": "5"}},
                                                  {"tool": "explode", "args": {"reason": "stdio"}}]})
    assert ex.status == "succeeded", ex.error
    looked_up, failed = ex.output
    assert looked_up == {"value": {"order": "5", "status": "shipped", "server": "stdio"}}
    assert failed["caught"].startswith("connector tools.explode failed: the tool answered an error")
    # HTTP-only settings are refused; a command that does not exist says so
    with pytest.raises(UsageError, match="takes no auth, credential or headers"):
        b.edit_connector("tools", headers={"X-A": "1"})
    with pytest.raises(UsageError, match="could not start the server command"):
        b.create_connector("gone", "stdio:/nonexistent/mcp-server --flag", kind="mcp")
    b.close()
    # the CLI: --mcp-command
    out = rf_ok("connectors", "create", "cli-tools", "--mcp-command", command, cwd=ws.root, run=run_rf)
    assert "5 tool(s) as resources" in out
