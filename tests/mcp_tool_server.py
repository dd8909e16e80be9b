"""A small MCP server for the MCP-connector tests, written with the official ``mcp`` SDK.

Tools (``variant`` v1; v2 changes ``lookup_order``'s input schema):

- ``add(a, b)`` → structured content ``{"result": a + b}``;
- ``lookup_order(order_id)`` (v2: also ``include_items``) → text content, a JSON object that
  names the server's ``label`` (so a test sees which server, staging's or production's, answered);
- ``getWeather(city)`` → plain text (a name that is no rf slug: the resource is ``getweather``);
- ``slow(seconds)`` → answers "done" after that long;
- ``explode(reason)`` → always fails: an ``isError`` result naming the reason.

Served over streamable HTTP on 127.0.0.1 in a thread (:func:`serve`), with the MCP endpoint at
``/mcp``. With a ``token``, every request must carry ``Authorization: Bearer TOKEN`` (else 401).
``python tests/mcp_tool_server.py [--label L] [--token T] [--variant v2]`` serves one by hand;
``--stdio`` serves over standard input and output instead (an MCP connector's ``--mcp-command``).
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def build(label: str, variant: str = "v1") -> Any:
    from mcp.server.mcpserver import MCPServer

    server = MCPServer(name=f"tools-{label}")

    @server.tool()
    def add(a: int, b: int) -> dict[str, int]:
        """Add two integers."""
        return {"result": a + b}

    if variant == "v1":
        @server.tool(structured_output=False)
        def lookup_order(order_id: str) -> str:
            """Look up an order by id."""
            return json.dumps({"order": order_id, "status": "shipped", "server": label})
    else:
        @server.tool(structured_output=False)
        def lookup_order(order_id: str, include_items: bool = False) -> str:  # type: ignore[misc]
            """Look up an order by id (optionally with its items)."""
            body: dict[str, Any] = {"order": order_id, "status": "shipped", "server": label}
            if include_items:
                body["items"] = ["book"]
            return json.dumps(body)

    @server.tool(name="getWeather", structured_output=False)
    def get_weather(city: str) -> str:
        """The weather in a city (a tool name that is not an rf resource slug)."""
        return f"sunny in {city}"

    @server.tool(structured_output=False)
    async def slow(seconds: float) -> str:
        """Answers after ``seconds``."""
        import anyio

        await anyio.sleep(seconds)
        return "done"

    @server.tool(structured_output=False)
    def explode(reason: str) -> str:
        """Always fails."""
        from mcp.server.mcpserver.exceptions import ToolError

        raise ToolError(f"exploded: {reason}")

    return server


class _BearerCheck:
    """ASGI middleware: refuse (401) an HTTP request without ``Authorization: Bearer TOKEN``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app, self.token = app, token
        self.seen: list[str] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            self.seen.append(auth)
            if auth != f"Bearer {self.token}":
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error": "bad token"}'})
                return
        await self.app(scope, receive, send)


@contextmanager
def serve(label: str, token: str | None = None, variant: str = "v1") -> Iterator[str]:
    """Serve in a thread; yields the MCP endpoint URL (``http://127.0.0.1:PORT/mcp``)."""
    import uvicorn

    app: Any = build(label, variant).streamable_http_app()
    if token:
        app = _BearerCheck(app, token)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)  # connections wait in the backlog until uvicorn accepts them: no start-up race
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"mcp-{label}", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


if __name__ == "__main__":  # by hand, and as the --mcp-command of a test
    import argparse
    import time

    parser = argparse.ArgumentParser()
    parser.add_argument("--label", default="by-hand")
    parser.add_argument("--token")
    parser.add_argument("--variant", default="v1")
    parser.add_argument("--stdio", action="store_true", help="serve over stdin/stdout instead")
    args = parser.parse_args()
    if args.stdio:
        build(args.label, args.variant).run("stdio")
        raise SystemExit(0)
    with serve(args.label, args.token, args.variant) as url:
        print(url, flush=True)
        while True:
            time.sleep(3600)
