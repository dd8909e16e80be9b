"""``rf mcp``: an environment's agents as MCP tools over stdio (for desktop clients).

A desktop client (Claude Desktop, an IDE) starts ``rf mcp --env staging`` and speaks MCP
on its stdin/stdout. Each request goes through the usual backend, chosen per request:

- a running ``rf serve``/``rf ui``: the request is passed to its ``/{env}/mcp`` (with the
  server's token), so the run happens there — warm workers, one execution path,
  source ``mcp``;
- none: the store is opened in this process for that one request (so ``rf mcp`` never
  holds the database between calls and a server can start at any time), tools are read
  from it and a call runs the commit here (a cold worker each time).

``rf mcp --print-config`` prints the ``mcpServers`` entry a client needs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer


def mcp(
    env: Annotated[str | None, typer.Option("--env", "-e", help="Environment whose agents are the tools: "
                                                                "staging or production.")] = None,
    print_config: Annotated[bool, typer.Option(
        "--print-config", help="Print the JSON a desktop client needs (its mcpServers entry) and exit.")] = False,
) -> None:
    """Serve an environment's deployed agents as MCP tools over stdio (for desktop clients)."""
    from rf.cli.app import workspace  # (not at import: rf.cli.app registers this command)
    from rf.models import check_env

    ws = workspace()
    if print_config:
        from rf.models import ENVIRONMENTS

        envs = [check_env(env)] if env is not None else list(ENVIRONMENTS)
        typer.echo(json.dumps(client_config(ws.root, ws.name, envs), indent=2))
        return
    if env is None:
        from rf.errors import UsageError

        raise UsageError("which environment's agents? rf mcp serves one",
                         "rf mcp --env staging (or --env production); rf mcp --print-config shows a "
                         "desktop client's settings")
    import anyio

    anyio.run(serve_stdio, ws.root, check_env(env))


def client_config(root: Path, name: str, envs: list[str]) -> dict[str, Any]:
    """``{"mcpServers": {...}}``: one entry per environment, running this ``rf`` on this workspace."""
    command, prefix = _rf_command()
    servers = {}
    for env in envs:
        servers[f"rf-{name}-{env}"] = {
            "command": command,
            "args": [*prefix, "--workspace", str(root), "mcp", "--env", env],
            "cwd": str(root),
        }
    return {"mcpServers": servers}


def _rf_command() -> tuple[str, list[str]]:
    """The absolute command that runs this rf: the ``rf`` script, else ``python -m rf``."""
    import shutil

    argv0 = Path(sys.argv[0])
    if argv0.name == "rf" and argv0.is_file():
        return str(argv0.resolve()), []
    beside = Path(sys.executable).parent / "rf"
    if beside.is_file():
        return str(beside), []
    found = shutil.which("rf")
    if found:
        return str(Path(found).resolve()), []
    return sys.executable, ["-m", "rf"]


async def serve_stdio(root: Path, env: str) -> None:
    """Serve MCP on stdin/stdout until the client closes stdin."""
    from mcp.server.stdio import stdio_server

    from rf.compose import mcp_server_parts

    build_server = mcp_server_parts().build_server

    async def list_tools() -> Any:
        remote = _server(root)
        if remote is not None:
            result = await _forward(remote, env, lambda session: session.list_tools())
            return result.tools
        return await _local(root, lambda services: _environment_tools(services, env))

    async def call(name: str, arguments: dict[str, Any] | None) -> Any:
        error_outcome = mcp_server_parts().error_outcome

        try:
            remote = _server(root)
            if remote is not None:
                return await _forward(remote, env, lambda session: session.call_tool(name, arguments or {}))
            return await _local(root, lambda services: _call_tool(services, env, name, arguments))
        except Exception as exc:  # noqa: BLE001 - the store busy, the server gone: a tool error, not a crash
            return error_outcome(exc)

    server = build_server(env, list_tools, call)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


def _environment_tools(services: Any, env: str) -> Any:
    from rf.compose import mcp_server_parts

    return mcp_server_parts().environment_tools(services, env)


def _call_tool(services: Any, env: str, name: str, arguments: dict[str, Any] | None) -> Any:
    from rf.compose import mcp_server_parts

    return mcp_server_parts().call_tool(services, env, name, arguments)


def _server(root: Path) -> tuple[str, str] | None:
    """``(url, token)`` of the server that owns this workspace's store now, if any."""
    import os

    from rf import serverinfo
    from rf.config import find_workspace

    url = os.environ.get("RF_SERVER_URL")
    if url:
        return url.rstrip("/"), os.environ.get("RF_SERVER_TOKEN", "")
    info = serverinfo.read(find_workspace(str(root)).server_file)
    return (info.url, info.token) if info is not None else None


async def _forward(remote: tuple[str, str], env: str, request: Any) -> Any:
    """Send one MCP request to the server's ``/{env}/mcp`` (a short client session)."""
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    url, token = remote
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with (httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=3600)) as http,
                streamable_http_client(f"{url}/{env}/mcp", http_client=http) as (read, write),
                ClientSession(read, write) as session):
        await session.initialize()
        return await request(session)


async def _local(root: Path, work: Any) -> Any:
    """Run ``work(services)`` in a thread with the store opened in this process for it."""
    import anyio

    def run() -> Any:
        from rf.client import open_local
        from rf.config import find_workspace

        backend = open_local(find_workspace(str(root)))
        try:
            return work(backend.services)
        finally:
            backend.close()

    return await anyio.to_thread.run_sync(run)


def register(app: typer.Typer) -> None:
    app.command(rich_help_panel="Run")(mcp)
