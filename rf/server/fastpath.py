"""``POST /{env}/agents/{name}`` (a JSON answer) served in plain ASGI, in front of Litestar.

Invoking an agent is the request rf serves most, and a warm worker answers in
a fraction of a millisecond; Litestar's per-request work (building a Request,
parsing path parameters through its signature model, converting and
encoding the returned Response) cost about as much again. This wrapper
handles exactly that one case itself, with the same checks and the same
answers, and passes everything else to the Litestar app untouched: other
routes and methods, a trailing slash, server-sent events (``Accept:
text/event-stream``), the lifespan. The route stays declared in Litestar, so
it is documented in the OpenAPI schema and Litestar would serve it the same
way without this wrapper.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from rf.errors import PayloadTooLarge
from rf.jsonfast import dumpb
from rf.server.app import BODY_TOO_LARGE, check_env, error_headers, error_payload, invoke_params, parse_json_body

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    from rf.services import Services

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
    ASGIApp = Callable[..., Awaitable[None]]

log = logging.getLogger("rf.server")

_JSON_HEADERS = [(b"content-type", b"application/json")]


class Disconnected(Exception):
    """The client went away before sending the whole body."""


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """A request's whole body from ASGI ``receive``, at most *max_bytes* (else PayloadTooLarge);
    :class:`Disconnected` when the client goes away first (the fast paths of rf and OpenAI)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise PayloadTooLarge(*BODY_TOO_LARGE)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FastInvoke:
    """ASGI app: the invoke fast path, then ``app`` (the Litestar application) for the rest."""

    def __init__(self, app: ASGIApp, services: Services, *, max_body_bytes: int) -> None:
        from rf.server.openai_api import FastChat  # /{env}/v1/chat/completions, served the same way

        self.app = FastChat(app, services, max_body_bytes=max_body_bytes)
        self.services = services
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        parts = scope["path"].split("/")
        # "/staging/agents/hello" -> ["", "staging", "agents", "hello"]
        if len(parts) != 4 or parts[2] != "agents" or parts[0] or not parts[1] or not parts[3]:
            return await self.app(scope, receive, send)
        length: int | None = None
        for key, value in scope["headers"]:
            if key == b"accept" and b"text/event-stream" in value:
                return await self.app(scope, receive, send)
            if key == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
        try:
            env = check_env(parts[1])
            if length is not None and length > self.max_body_bytes:
                raise PayloadTooLarge(*BODY_TOO_LARGE)
            payload, session_id = invoke_params(parse_json_body(await read_body(receive, self.max_body_bytes)))
            ex = await self.services.ainvoke(env, parts[3], payload, session_id, "endpoint")
        except Disconnected:
            return None
        except Exception as exc:  # noqa: BLE001 - every failure becomes rf's JSON error answer
            status, body = error_payload("POST", scope["path"], exc)
            extra = error_headers(exc)
            return await _respond(send, status, body, [(k.encode(), v.encode()) for k, v in extra.items()] if extra else ())
        if ex.status == "succeeded":
            return await _respond(send, 200, {"execution_id": ex.id, "status": ex.status, "output": ex.output})
        return await _respond(send, 500, {"execution_id": ex.id, "status": ex.status, "error": ex.error})

async def _respond(send: Send, status: int, content: Any, extra: Any = ()) -> None:
    body = dumpb(content)
    await send({"type": "http.response.start", "status": status,
                "headers": [*_JSON_HEADERS, (b"content-length", str(len(body)).encode()), *extra]})
    await send({"type": "http.response.body", "body": body})
