"""An environment's deployed agents as MCP tools: ``/{env}/mcp`` and ``rf mcp``.

One tool per agent deployed in the environment, listed per request (a deploy or a
promote shows at once): name = the agent's name, description and input schema from
its commit's agent.toml (``description``, ``[input] schema``; without a schema, any
object). A tool call runs that environment's commit exactly like ``POST
/{env}/agents/{name}`` — the arguments object is the input, the execution is recorded
with the source ``mcp``, with its trace — and answers the output as text (JSON text
when it is not a string) and as structured content (an object as is, anything else as
``{"result": output}``; MCP wants an object there). A failed run, an input that does
not match the schema, an agent not deployed here: a tool result with ``isError`` and
the error's text, never a protocol error.

Transport: the official ``mcp`` SDK's low-level ``Server`` behind its streamable-HTTP
session manager, in **stateless JSON** mode: each POST carries one JSON-RPC message
and gets its JSON answer; the server keeps no MCP session between requests (a restart
or another replica answers the next call the same). So a GET (a server-initiated
event stream) and a DELETE (ending a session) are answered 405, as the protocol
allows. Everything in front — Host, Origin, JSON content type, endpoint keys — is
the request guard's (:mod:`rf.server.guard`), as for every route.

The SDK (and what it pulls in: pydantic, starlette, anyio...) is imported when the
first MCP request arrives, or when ``rf mcp`` starts: ``rf serve`` and the CLI do not
pay for it otherwise.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rf.agent_input import PERMISSIVE
from rf.errors import RfError

if TYPE_CHECKING:
    from collections.abc import MutableMapping

    from rf.models import Execution
    from rf.services import Services

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

log = logging.getLogger("rf.server")

#: The execution source of a tool call (``rf executions list --source mcp``).
SOURCE = "mcp"


# ------------------------------------------------------------ tools (no SDK needed)
def environment_tools(services: Services, env: str) -> list[dict[str, Any]]:
    """``[{name, description, input_schema}]``: the agents deployed in ``env``, as tools."""
    tools = []
    for agent, _commit, config in services.deployed_agents(env):
        description = str(config.get("description") or agent.description or "")
        tools.append({"name": agent.name,
                      "description": description or f"the rf agent {agent.name} ({env})",
                      "input_schema": config.get("input_schema") or PERMISSIVE})
    return tools


@dataclass
class ToolOutcome:
    """What a tool call answers (turned into the SDK's ``CallToolResult`` by :func:`to_result`)."""

    text: str
    structured: dict[str, Any] | None = None
    is_error: bool = False
    execution_id: str | None = None


def outcome_of(ex: Execution) -> ToolOutcome:
    """A finished execution as a tool result: its output, or (``isError``) its error."""
    if ex.status != "succeeded":
        return ToolOutcome(text=f"the agent failed: {ex.error or ex.status} (execution {ex.id}; "
                                f"see: rf executions show {ex.id} --env {ex.env})",
                           is_error=True, execution_id=ex.id)
    output = ex.output
    text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False, default=str)
    structured = output if isinstance(output, dict) else {"result": output}
    return ToolOutcome(text=text, structured=structured, execution_id=ex.id)


def error_outcome(exc: BaseException) -> ToolOutcome:
    """An error before or around the run (unknown agent, input against the schema, busy) as a
    tool result with ``isError``: the model calling the tool reads what to do."""
    if isinstance(exc, RfError):
        return ToolOutcome(text=exc.message + (f" (hint: {exc.hint})" if exc.hint else ""), is_error=True)
    log.error("MCP tool call failed", exc_info=exc)
    return ToolOutcome(text=f"internal error ({type(exc).__name__}); see the rf server log", is_error=True)


async def acall_tool(services: Services, env: str, name: str, arguments: dict[str, Any] | None) -> ToolOutcome:
    """Run agent ``name`` of ``env`` with ``arguments`` as its input, on the event loop."""
    try:
        ex = await services.ainvoke(env, name, arguments if arguments is not None else {}, None, SOURCE)
    except Exception as exc:  # noqa: BLE001 - every failure is a tool error, never a protocol crash
        return error_outcome(exc)
    return outcome_of(ex)


def call_tool(services: Services, env: str, name: str, arguments: dict[str, Any] | None) -> ToolOutcome:
    """:func:`acall_tool` for a thread (``rf mcp`` with the store in-process)."""
    try:
        ex = services.invoke(env, name, arguments if arguments is not None else {}, None, SOURCE)
    except Exception as exc:  # noqa: BLE001 - as above
        return error_outcome(exc)
    return outcome_of(ex)


# ------------------------------------------------------------ the SDK's side
def to_result(outcome: ToolOutcome) -> Any:
    """A :class:`ToolOutcome` as the SDK's ``CallToolResult``."""
    import mcp_types as types

    return types.CallToolResult(
        content=[types.TextContent(text=outcome.text)], structured_content=outcome.structured,
        is_error=outcome.is_error,
        _meta={"rf/execution_id": outcome.execution_id} if outcome.execution_id else None)


def build_server(env: str, list_tools: Callable[[], Awaitable[Any]],
                 call: Callable[[str, dict[str, Any] | None], Awaitable[Any]]) -> Any:
    """The SDK's low-level ``Server`` for ``env``. ``list_tools()`` answers ``[{name,
    description, input_schema}]`` (or the SDK's ``Tool`` objects), ``call(name, arguments)`` a
    :class:`ToolOutcome` (or the SDK's ``CallToolResult``)."""
    import mcp_types as types
    from mcp.server.lowlevel import Server

    from rf._version import __version__

    async def on_list_tools(ctx: Any, params: Any) -> Any:
        tools = [t if isinstance(t, types.Tool) else types.Tool(**t) for t in await list_tools()]
        return types.ListToolsResult(tools=tools)

    async def on_call_tool(ctx: Any, params: Any) -> Any:
        result = await call(params.name, params.arguments)
        return to_result(result) if isinstance(result, ToolOutcome) else result

    return Server(f"rf-{env}", version=__version__,
                  instructions=f"The rf agents deployed in {env}: each tool runs one agent's {env} commit.",
                  on_list_tools=on_list_tools, on_call_tool=on_call_tool)


# ------------------------------------------------------------ /{env}/mcp (streamable HTTP)
class McpEndpoint:
    """The ASGI side of ``/{env}/mcp``: one SDK server and session manager per environment,
    made and started by the first request to it, stopped with the server (:meth:`aclose`)."""

    def __init__(self, services: Services, *, max_body_bytes: int) -> None:
        self.services = services
        self.max_body_bytes = max_body_bytes
        self._managers: dict[str, Any] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._lock: asyncio.Lock | None = None
        self._stop: asyncio.Event | None = None

    async def __call__(self, env: str, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            # Stateless: no server-initiated stream (GET) and no session to end (DELETE).
            return await _respond(send, 405, {"jsonrpc": "2.0", "id": None, "error": {
                "code": -32000, "message": f"Method Not Allowed: this MCP server is stateless; send each "
                                           f"JSON-RPC message as a POST to /{env}/mcp"}},
                                  [(b"allow", b"POST")])
        manager = self._managers.get(env)
        if manager is None:
            manager = await self._start(env)
        await manager.handle_request(scope, receive, send)

    async def _start(self, env: str) -> Any:
        if self._lock is None:
            self._lock = asyncio.Lock()
            self._stop = asyncio.Event()
        async with self._lock:
            if env in self._managers:
                return self._managers[env]
            # The SDK's first import takes a while: off the event loop, other requests go on.
            await asyncio.to_thread(_import_sdk)
            from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

            services = self.services

            async def list_tools() -> list[dict[str, Any]]:
                return await asyncio.to_thread(environment_tools, services, env)

            async def call(name: str, arguments: dict[str, Any] | None) -> ToolOutcome:
                return await acall_tool(services, env, name, arguments)

            manager = StreamableHTTPSessionManager(
                app=build_server(env, list_tools, call), stateless=True, json_response=True,
                max_request_body_size=self.max_body_bytes)
            ready = asyncio.Event()
            task = asyncio.create_task(self._run(manager, ready), name=f"rf-mcp-{env}")
            waiter = asyncio.create_task(ready.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not ready.is_set():
                waiter.cancel()
                task.result()  # raises what stopped it
            self._tasks.append(task)
            self._managers[env] = manager
            return manager

    async def _run(self, manager: Any, ready: asyncio.Event) -> None:
        assert self._stop is not None
        async with manager.run():
            ready.set()
            await self._stop.wait()

    async def aclose(self) -> None:
        """Stop the session managers (the server is shutting down)."""
        if self._stop is not None:
            self._stop.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._managers.clear()
        self._tasks.clear()


def _import_sdk() -> None:
    import mcp.server.lowlevel
    import mcp.server.streamable_http_manager  # noqa: F401


async def _respond(send: Send, status: int, content: Any, extra: list[tuple[bytes, bytes]]) -> None:
    body = json.dumps(content).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


__all__ = ["SOURCE", "McpEndpoint", "ToolOutcome", "acall_tool", "build_server", "call_tool",
           "environment_tools", "outcome_of", "to_result"]
