"""/{env}/mcp and ``rf mcp``: an environment's agents as MCP tools, with the official ``mcp``
client (streamable HTTP against a real ``rf serve``; stdio against a real ``rf mcp``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.conftest import RF, ServerProc, run_rf, run_rf_here, start_server, write_agent

VERSIONED_PY = (
    "VERSION = {version!r}\n"
    "def handle(input, ctx):\n"
    "    return {{'message': 'hello, ' + input.get('name', 'world'), 'env': ctx.env, 'version': VERSION}}\n"
)
GREET_TOML = '''description = "Greets a person by name"
timeout_s = 10

[input.schema]
type = "object"
required = ["name"]
properties.name = { type = "string", minLength = 1 }
additionalProperties = false
'''
GREET_PY = "def handle(input, ctx):\n    return 'hi ' + input['name']\n"
BOOM_PY = "def handle(input, ctx):\n    raise RuntimeError('the boom agent always fails')\n"
LIST_PY = "def handle(input, ctx):\n    return [1, 2, 3]\n"

Session = Callable[[ClientSession], Awaitable[Any]]


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def env_vars(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return {"XDG_DATA_HOME": str(tmp_path_factory.mktemp("xdg")), "NO_COLOR": "1"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, env_vars: dict[str, str]) -> Iterator[tuple[Path, ServerProc]]:
    """A served workspace: ``hello`` (v1 in production, v2 in staging), ``greet`` (an
    [input] schema; both environments), ``boom`` (fails) and ``listy`` (staging only)."""
    from rf.config import init_workspace

    root = init_workspace(tmp_path_factory.mktemp("mcp") / "ws").root
    server = start_server(root, extra_env=env_vars)
    try:
        write_agent(root, "hello", VERSIONED_PY.format(version="v1"))
        write_agent(root, "greet", GREET_PY, GREET_TOML)
        for name in ("hello", "greet"):
            _ok(run_rf("agents", "deploy", name, cwd=root, env=env_vars))
            _ok(run_rf_here("agents", "promote", name, "--yes", cwd=root, env=env_vars))
        write_agent(root, "hello", VERSIONED_PY.format(version="v2"))
        write_agent(root, "boom", BOOM_PY, 'description = "Always fails"\n')
        write_agent(root, "listy", LIST_PY, 'description = "A list"\n')
        for name in ("hello", "boom", "listy"):
            _ok(run_rf_here("agents", "deploy", name, cwd=root, env=env_vars))
        yield root, server
    finally:
        server.stop()


def _http(url: str, env: str, work: Session, key: str | None = None) -> Any:
    async def main() -> Any:
        import httpx2

        headers = {"authorization": f"Bearer {key}"} if key else None
        async with (httpx2.AsyncClient(headers=headers, timeout=30) as http,
                    streamable_http_client(f"{url}/{env}/mcp", http_client=http) as (read, write),
                    ClientSession(read, write) as session):
            await session.initialize()
            return await work(session)

    return anyio.run(main)


def _stdio(root: Path, env: str, work: Session, extra_env: dict[str, str]) -> Any:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RF_")}
    environ.update(extra_env)
    params = StdioServerParameters(command=RF[0], args=[*RF[1:], "mcp", "--env", env], cwd=str(root), env=environ)

    async def main() -> Any:
        with anyio.fail_after(60):
            async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                return await work(session)

    return anyio.run(main)


def _tools(result: Any) -> dict[str, Any]:
    return {t.name: t for t in result.tools}


def _execution(server: ServerProc, execution_id: str) -> dict[str, Any]:
    r = httpx.get(f"{server.url}/api/executions/{execution_id}", headers={"authorization": f"Bearer {server.token}"})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


# ------------------------------------------------------------ streamable HTTP
def test_each_environment_lists_its_own_agents_as_tools(site: tuple[Path, ServerProc]) -> None:
    _root, server = site

    async def work(session: ClientSession) -> Any:
        return await session.list_tools()

    staging = _tools(_http(server.url, "staging", work))
    production = _tools(_http(server.url, "production", work))
    assert set(staging) == {"hello", "greet", "boom", "listy"}
    assert set(production) == {"hello", "greet"}  # staging-only agents are not production tools
    assert production["greet"].description == "Greets a person by name"
    assert production["greet"].input_schema["required"] == ["name"]
    assert production["greet"].input_schema["properties"]["name"] == {"type": "string", "minLength": 1}
    assert staging["hello"].input_schema == {"type": "object", "additionalProperties": True}  # no [input]
    assert staging["hello"].description == "Says hello"


def test_a_tool_call_runs_the_environments_commit_and_is_an_mcp_execution(site: tuple[Path, ServerProc]) -> None:
    _root, server = site

    async def work(session: ClientSession) -> Any:
        return await session.call_tool("hello", {"name": "Ada"})

    for env, version in (("staging", "v2"), ("production", "v1")):
        result = _http(server.url, env, work)
        assert result.is_error is False
        expected = {"message": "hello, Ada", "env": env, "version": version}
        assert result.structured_content == expected
        assert json.loads(result.content[0].text) == expected
        ex = _execution(server, result.meta["rf/execution_id"])
        assert (ex["env"], ex["agent"], ex["source"], ex["status"]) == (env, "hello", "mcp", "succeeded")
        assert ex["input"] == {"name": "Ada"}
    listed = httpx.get(f"{server.url}/api/executions", params={"env": "production", "source": "mcp"},
                       headers={"authorization": f"Bearer {server.token}"}).json()
    assert [e["source"] for e in listed] and {e["source"] for e in listed} == {"mcp"}


def test_the_sdks_high_level_client_on_the_newest_protocol(site: tuple[Path, ServerProc]) -> None:
    """``mcp.Client`` negotiates the newest protocol version (no initialize handshake): same tools."""
    from mcp import Client

    _root, server = site

    async def main() -> Any:
        async with Client(f"{server.url}/production/mcp") as client:
            tools = await client.list_tools()
            return client.protocol_version, tools, await client.call_tool("hello", {"name": "Flo"})

    version, tools, result = anyio.run(main)
    from mcp_types.version import MODERN_PROTOCOL_VERSIONS

    assert version in MODERN_PROTOCOL_VERSIONS  # (2026-07-28 with mcp 2.3)
    assert {t.name for t in tools.tools} == {"hello", "greet"}
    assert result.structured_content == {"message": "hello, Flo", "env": "production", "version": "v1"}


def test_string_and_list_outputs(site: tuple[Path, ServerProc]) -> None:
    _root, server = site

    async def work(session: ClientSession) -> Any:
        return await session.call_tool("greet", {"name": "Bo"}), await session.call_tool("listy", {})

    greet, listy = _http(server.url, "staging", work)
    assert greet.content[0].text == "hi Bo" and greet.structured_content == {"result": "hi Bo"}
    assert json.loads(listy.content[0].text) == [1, 2, 3] and listy.structured_content == {"result": [1, 2, 3]}


def test_a_failing_agent_is_a_tool_error_recorded_as_an_execution(site: tuple[Path, ServerProc]) -> None:
    _root, server = site

    async def work(session: ClientSession) -> Any:
        return await session.call_tool("boom", {})

    result = _http(server.url, "staging", work)
    assert result.is_error is True
    assert "the boom agent always fails" in result.content[0].text
    ex = _execution(server, result.meta["rf/execution_id"])
    assert (ex["source"], ex["status"]) == ("mcp", "failed")
    trace = httpx.get(f"{server.url}/api/traces/{ex['id']}", headers={"authorization": f"Bearer {server.token}"})
    assert trace.status_code == 200 and ex["id"] in trace.text


def test_unknown_and_not_promoted_agents_are_tool_errors(site: tuple[Path, ServerProc]) -> None:
    _root, server = site

    async def work(session: ClientSession) -> Any:
        return await session.call_tool("boom", {}), await session.call_tool("nobody", {})

    not_promoted, unknown = _http(server.url, "production", work)
    assert not_promoted.is_error and "not in production" in not_promoted.content[0].text
    assert "rf agents promote boom" in not_promoted.content[0].text
    assert unknown.is_error and "unknown agent 'nobody'" in unknown.content[0].text


def test_the_input_schema_checks_tool_calls_and_the_endpoint(site: tuple[Path, ServerProc]) -> None:
    _root, server = site

    async def work(session: ClientSession) -> Any:
        return await session.call_tool("greet", {"name": 5}), await session.call_tool("greet", {})

    wrong_type, missing = _http(server.url, "production", work)
    assert wrong_type.is_error and "5 is not of type 'string'" in wrong_type.content[0].text
    assert "input.name" in wrong_type.content[0].text
    assert missing.is_error and "'name' is a required property" in missing.content[0].text

    url = f"{server.url}/production/agents/greet"
    bad = httpx.post(url, json={"input": {"name": ""}})  # the invoke fast path
    assert bad.status_code == 400, bad.text
    error = bad.json()["error"]
    assert error["code"] == "usage" and "[input] schema of agent 'greet' in production" in error["message"]
    assert "GET /production/agents/greet" in error["hint"]
    streamed = httpx.post(url, json={"input": {"extra": 1, "name": "x"}}, headers={"accept": "text/event-stream"})
    assert streamed.status_code == 400 and "Additional properties" in streamed.json()["error"]["message"]
    good = httpx.post(url, json={"input": {"name": "Cy"}})
    assert good.status_code == 200 and good.json()["output"] == "hi Cy"
    described = httpx.get(url).json()
    assert described["input_schema"]["required"] == ["name"]


def test_the_guard_in_front_of_mcp(site: tuple[Path, ServerProc]) -> None:
    _root, server = site
    url = f"{server.url}/staging/mcp"
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = {"accept": "application/json, text/event-stream"}
    foreign = httpx.post(url, json=ping, headers={**accept, "host": "evil.example"})
    assert foreign.status_code == 421 and foreign.json()["error"]["code"] == "host_not_allowed"
    page = httpx.post(url, json=ping, headers={**accept, "origin": "https://evil.example"})
    assert page.status_code == 403
    form = httpx.post(url, content=json.dumps(ping), headers={**accept, "content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    text = httpx.post(url, content=json.dumps(ping), headers={**accept, "content-type": "text/plain"})
    assert text.status_code == 415
    for method in ("GET", "DELETE"):
        r = httpx.request(method, url, headers={"accept": "text/event-stream"})
        assert r.status_code == 405 and r.headers["allow"] == "POST"
    ok = httpx.post(url, json=ping, headers=accept)
    assert ok.status_code == 200 and ok.json()["id"] == 1
    assert httpx.post(f"{server.url}/testing/mcp", json=ping, headers=accept).status_code == 404
    schema = httpx.get(f"{server.url}/schema/openapi.json").json()
    assert "post" in schema["paths"]["/{env}/mcp"]


# ------------------------------------------------------------ stdio (rf mcp)
def test_rf_mcp_over_stdio_goes_through_the_running_server(site: tuple[Path, ServerProc],
                                                           env_vars: dict[str, str]) -> None:
    root, server = site

    async def work(session: ClientSession) -> Any:
        return await session.list_tools(), await session.call_tool("hello", {"name": "Di"})

    tools, result = _stdio(root, "production", work, env_vars)
    assert set(_tools(tools)) == {"hello", "greet"}
    assert result.structured_content == {"message": "hello, Di", "env": "production", "version": "v1"}
    ex = _execution(server, result.meta["rf/execution_id"])
    assert (ex["env"], ex["source"]) == ("production", "mcp")


def test_rf_mcp_over_stdio_without_a_server(tmp_path: Path) -> None:
    from rf.config import init_workspace

    root = init_workspace(tmp_path / "ws").root
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    write_agent(root, "hello", VERSIONED_PY.format(version="v1") + "print('stray output never reaches stdout')\n")
    write_agent(root, "greet", GREET_PY, GREET_TOML)
    for name in ("hello", "greet"):
        _ok(run_rf_here("agents", "deploy", name, cwd=root, env=env))

    async def work(session: ClientSession) -> Any:
        return (await session.list_tools(), await session.call_tool("hello", {"name": "Ed"}),
                await session.call_tool("greet", {"name": 1}))

    tools, result, invalid = _stdio(root, "staging", work, env)
    assert set(_tools(tools)) == {"hello", "greet"}
    assert _tools(tools)["greet"].input_schema["required"] == ["name"]
    assert result.structured_content == {"message": "hello, Ed", "env": "staging", "version": "v1"}
    assert invalid.is_error and "is not of type 'string'" in invalid.content[0].text
    listed = json.loads(_ok(run_rf("executions", "list", "--env", "staging", "--source", "mcp", "--json",
                                   cwd=root, env=env)).stdout)
    assert [e["id"] for e in listed] == [result.meta["rf/execution_id"]]  # (the invalid call never ran)
    assert not (root / ".rf" / "server.json").exists()


def test_print_config(tmp_path: Path) -> None:
    from rf.config import init_workspace

    root = init_workspace(tmp_path / "shop").root
    both = json.loads(_ok(run_rf("mcp", "--print-config", cwd=root)).stdout)["mcpServers"]
    assert set(both) == {"rf-shop-staging", "rf-shop-production"}
    entry = both["rf-shop-production"]
    assert Path(entry["command"]).is_absolute() and Path(entry["command"]).exists()
    assert entry["args"][-5:] == ["--workspace", str(root), "mcp", "--env", "production"]
    one = json.loads(_ok(run_rf("mcp", "--print-config", "--env", "staging", cwd=root)).stdout)["mcpServers"]
    assert list(one) == ["rf-shop-staging"]
    missing = run_rf("mcp", cwd=root)
    assert missing.returncode != 0 and "rf mcp --env staging" in missing.stderr


# ------------------------------------------------------------ keys
def test_require_keys_applies_to_mcp(tmp_path: Path) -> None:
    from rf.config import init_workspace

    root = init_workspace(tmp_path / "ws").root
    text = (root / "rf.toml").read_text()
    (root / "rf.toml").write_text(text.replace("[server]\n", "[server]\nrequire_keys = true\n", 1))
    env = {"XDG_DATA_HOME": str(tmp_path / "xdg")}
    write_agent(root, "hello", VERSIONED_PY.format(version="v1"))
    _ok(run_rf_here("agents", "deploy", "hello", cwd=root, env=env))
    server = start_server(root, extra_env=env)
    try:
        key = json.loads(_ok(run_rf("keys", "create", "--env", "staging", "--json", cwd=root, env=env)).stdout)["secret"]
        ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        accept = {"accept": "application/json, text/event-stream"}
        bare = httpx.post(f"{server.url}/staging/mcp", json=ping, headers=accept)
        assert bare.status_code == 401 and "rf keys create --env staging" in bare.json()["error"]["hint"]
        other = httpx.post(f"{server.url}/production/mcp", json=ping, headers={**accept, "authorization": f"Bearer {key}"})
        assert other.status_code == 401

        async def work(session: ClientSession) -> Any:
            return await session.call_tool("hello", {"name": "Key"})

        with pytest.raises(ExceptionGroup) as refused:  # the client's error for the 401 above
            _http(server.url, "staging", work)
        assert refused.group_contains(MCPError, match="error response")
        result = _http(server.url, "staging", work, key=key)
        assert result.structured_content["message"] == "hello, Key"
    finally:
        server.stop()


# ------------------------------------------------------------ agent.toml [input]
def test_deploy_refuses_a_schema_that_is_not_json_schema(tmp_path: Path) -> None:
    from rf.config import init_workspace

    root = init_workspace(tmp_path / "ws").root
    write_agent(root, "bad", GREET_PY, '[input.schema]\ntype = "object"\nproperties.name = { type = "strng" }\n')
    proc = run_rf("agents", "deploy", "bad", cwd=root, env={"XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert proc.returncode != 0
    assert "[input] schema is not a valid JSON Schema" in proc.stderr and "properties/name/type" in proc.stderr


@pytest.mark.parametrize(("toml", "message"), [
    ('[input]\nschemas = "{}"\n', "did you mean 'schema'?"),
    ('[input]\nschema = "{not json"\n', "[input] schema is a string but not JSON"),
    ('[input]\nschema = \'{"type": "string"}\'\n', "must describe an object"),
    ('[input.schema]\nproperties.a = { type = "string" }\n', "must describe an object"),
    ('input = 3\n', "input must be a table"),
])
def test_bad_input_tables(toml: str, message: str) -> None:
    from rf.config import parse_agent_toml
    from rf.errors import InvalidAgent

    with pytest.raises(InvalidAgent) as info:
        parse_agent_toml("x", toml)
    assert message in info.value.message


def test_a_json_string_schema_is_accepted() -> None:
    from rf.config import parse_agent_toml

    config = parse_agent_toml("x", '[input]\nschema = \'{"type": "object", "required": ["q"]}\'\n')
    assert config.input_schema == {"type": "object", "required": ["q"]}
    assert parse_agent_toml("x", "").input_schema is None


def test_serving_and_the_cli_do_not_import_the_mcp_sdk() -> None:
    code = ("import sys\nfrom rf.server.app import create_app\nimport rf.server.mcp_server, rf.cli.mcp\n"
            "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
