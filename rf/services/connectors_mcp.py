"""MCP servers as connectors: the client side, with the official ``mcp`` SDK.

A connector of kind ``mcp`` points (per environment, like an HTTP connector's base URL) at a
streamable-HTTP MCP endpoint, or (``stdio:COMMAND`` in place of the URL) at a command that
serves MCP over its standard input and output, started in the workspace directory for each
session; its resources are the server's tools. The host uses two
operations, both synchronous (host methods run in the pool's threads):

- :func:`list_tools` — at ``rf connectors create --mcp`` and ``rf connectors refresh``;
- :func:`call_tool` — for ``ctx.connectors.call(slug, tool, **args)``.

Each opens one MCP session (initialize, one request, close) inside ``anyio.run``: simple and
correct, at the price of a handshake per call. Keeping one session per (environment,
connector) open across calls is future work.

Failures of the transport (no connection, an HTTP error status, a timeout, a protocol error)
raise :class:`McpFailure` with a short reason (no URL, no secret) and a detail for the trace;
a tool that answers ``isError`` is *not* a failure here: :class:`ToolOutcome.is_error` says so
and the caller decides (the connector raises :class:`~rf.errors.ConnectorError`).
"""

from __future__ import annotations

import asyncio
import json
import shlex
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: The method shown for an MCP connector's resources (where an HTTP resource shows GET, POST...).
MCP_METHOD = "MCP"
#: A connector's base URL that names a command instead: an MCP server spoken to over stdio.
STDIO_PREFIX = "stdio:"


def stdio_command(target: str) -> list[str] | None:
    """``stdio:python server.py --flag`` → its argv; None for a URL. ValueError: unbalanced quotes."""
    if not target.startswith(STDIO_PREFIX):
        return None
    return shlex.split(target[len(STDIO_PREFIX):])


@dataclass
class McpTool:
    """One tool as the server lists it."""

    name: str
    title: str
    description: str
    input_schema: dict[str, Any]


@dataclass
class ToolOutcome:
    """A tool's answer: ``value`` (structured content, else the text JSON-decoded when it
    parses, else the text; other content kinds as a list of their JSON forms)."""

    value: Any
    is_error: bool
    text: str  #: the text content (an error's message)


class McpFailure(Exception):
    """The MCP server could not be reached or did not answer properly."""

    def __init__(self, reason: str, detail: str, status: int | None = None, timed_out: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason  #: short, safe for an error message (no URL, no secret)
        self.detail = detail  #: longer, for the trace span (the caller scrubs secrets)
        self.status = status  #: the HTTP status the server answered, when that is what failed
        self.timed_out = timed_out


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions inside (nested) exception groups, the task groups of the SDK's transport."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _run(fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` to completion from synchronous code (in a fresh thread if this one runs a loop)."""
    import anyio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(fn)
    with ThreadPoolExecutor(1, thread_name_prefix="rf-mcp") as pool:
        return pool.submit(anyio.run, fn).result()


def _session(url: str, headers: dict[str, str], timeout_s: float,
             work: Callable[[Any], Awaitable[T]], cwd: str | None = None) -> T:
    """Open an MCP session on ``url`` with ``headers`` (or start the ``stdio:`` command in
    ``cwd``), run ``work(session)``, close it; the whole exchange within ``timeout_s`` seconds."""
    statuses: list[int] = []
    argv = stdio_command(url)

    async def over_stdio() -> T:
        import anyio
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        assert argv
        with anyio.fail_after(timeout_s):
            async with (stdio_client(StdioServerParameters(command=argv[0], args=argv[1:], cwd=cwd))
                        as (read, write),
                        ClientSession(read, write) as session):
                await session.initialize()
                return await work(session)

    async def main() -> T:
        import anyio
        import httpx2
        from mcp import ClientSession
        from mcp.client.streamable_http import streamable_http_client

        async def note(response: Any) -> None:
            if response.status_code >= 400:
                statuses.append(response.status_code)

        with anyio.fail_after(timeout_s):
            async with (httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(timeout_s),
                                           event_hooks={"response": [note]}) as http,
                        streamable_http_client(url, http_client=http) as (read, write),
                        ClientSession(read, write) as session):
                await session.initialize()
                return await work(session)

    try:
        return _run(over_stdio if argv else main)
    except Exception as exc:  # noqa: BLE001 - every transport failure becomes one McpFailure
        raise _failure(exc, statuses, timeout_s) from None


def _failure(exc: BaseException, statuses: list[int], timeout_s: float) -> McpFailure:
    import httpx2

    leaves = _leaves(exc)
    if any(isinstance(e, TimeoutError | httpx2.TimeoutException) for e in leaves):
        if any(isinstance(e, httpx2.ConnectTimeout) for e in leaves):
            return McpFailure("timed out connecting", "connect timeout", timed_out=True)
        return McpFailure(f"timed out after {timeout_s:g} s", f"no answer within {timeout_s:g} s", timed_out=True)
    if statuses:
        return McpFailure(f"HTTP {statuses[0]}", f"the MCP server answered HTTP {statuses[0]}", status=statuses[0])
    first = leaves[0] if leaves else exc
    if isinstance(first, OSError):  # the stdio command could not be started
        return McpFailure("could not start the server command", f"{type(first).__name__}: {first}")
    if isinstance(first, httpx2.ConnectError):
        return McpFailure("could not connect", f"could not connect: {first}")
    if isinstance(first, httpx2.HTTPError):
        return McpFailure(type(first).__name__, f"{type(first).__name__}: {first}")
    return McpFailure("MCP protocol error", f"{type(first).__name__}: {first}")


def list_tools(url: str, headers: dict[str, str], timeout_s: float, cwd: str | None = None) -> list[McpTool]:
    """Every tool the server lists (all pages)."""

    async def work(session: Any) -> list[McpTool]:
        from mcp import types

        tools: list[McpTool] = []
        cursor: str | None = None
        while True:
            page = await session.list_tools(
                params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
            tools += [McpTool(name=t.name, title=t.title or "", description=t.description or "",
                              input_schema=dict(t.input_schema or {"type": "object"})) for t in page.tools]
            cursor = page.next_cursor
            if not cursor:
                return tools

    return _session(url, headers, timeout_s, work, cwd)


def call_tool(url: str, headers: dict[str, str], timeout_s: float, name: str,
              arguments: dict[str, Any], cwd: str | None = None) -> ToolOutcome:
    """Call tool ``name`` with ``arguments``."""

    async def work(session: Any) -> ToolOutcome:
        return outcome_of(await session.call_tool(name, arguments))

    return _session(url, headers, timeout_s, work, cwd)


def outcome_of(result: Any) -> ToolOutcome:
    """A ``CallToolResult`` as rf hands it to agent code."""
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    text = "\n".join(texts)
    if result.is_error:
        return ToolOutcome(None, True, text)
    if result.structured_content is not None:
        return ToolOutcome(result.structured_content, False, text)
    others = [c for c in result.content if getattr(c, "type", None) != "text"]
    if others:  # images, audio, resources: their JSON form, text parts included, in order
        return ToolOutcome([c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in result.content],
                           False, text)
    if not texts:
        return ToolOutcome(None, False, "")
    try:
        return ToolOutcome(json.loads(text), False, text)
    except ValueError:
        return ToolOutcome(text, False, text)
