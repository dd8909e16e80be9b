"""The one request guard: every request passes here before any route sees it.

An ASGI layer in front of everything (the invoke fast path, Litestar's routes,
the OpenAPI pages), so no route can skip it. In order:

1. **Host.** The ``Host`` header must name this server: an IP address (a
   DNS-rebinding page always sends its own *name*), ``localhost`` (and
   ``*.localhost``), the bind host, or a name in ``[server] allowed_hosts``.
   Anything else → 421 with the setting to add.
2. **Origin.** A browser sends ``Origin`` with every cross-site POST (forms,
   ``fetch`` in no-cors mode). An ``Origin`` that is not this server's own
   (same host and port as the request's ``Host``) or an allowed host → 403.
3. **Content type.** A request with a body (POST/PUT/PATCH/DELETE) must say
   ``application/json`` (or ``application/*+json``) → else 415. A
   ``<form enctype="text/plain">`` or ``multipart/form-data`` can carry a
   JSON-looking body; no form can send this header cross-site. ``curl -d``'s
   default, ``application/x-www-form-urlencoded``, is accepted too: a form in
   that encoding percent-encodes ``{`` and ``"``, so it can never produce a
   JSON object, and the quick start's ``curl -d '{...}'`` keeps working.
   Webhooks (``/{env}/hooks/ID``) are exempt: they are signed, and may accept text.
   ``/{env}/mcp`` takes exactly what the MCP streamable-HTTP transport sends: a POST
   must say ``application/json`` (the form encoding is refused there); a GET or DELETE
   carries no body (the route answers both 405: rf's MCP server is stateless).
4. **Endpoint keys.** ``/{env}/...`` (except webhooks) needs a key of that
   environment, or the management token, when keys are required (``[server]
   require_keys``, forced on a non-loopback bind). Session reads
   (``/{env}/agents/NAME/sessions/ID``) always need one.
5. **Who is calling.** On ``/api/...`` the token (``Authorization: Bearer``) names the actor:
   the per-start token of ``.rf/server.json`` is the workspace owner (admin), a personal
   token (``rf tokens``) is its user with their role. The actor goes to the route in the
   ASGI scope (``scope["rf.actor"]``); the route answers 401 when there is none and runs the
   Services call as that actor, which checks the role (rf.services.users).
6. **Agent code.** ``/api/...`` (except ``/api/health``; a missing or unknown token
   is answered 401 by the route) is refused when the client end of the connection is
   held by a process the server started — a worker or anything it spawned
   (see :mod:`rf.server.peer`).

Every refusal is rf's usual ``{"error": {code, message, hint}}`` JSON (under ``/{env}/v1/``,
the OpenAI-compatible API, OpenAI's error shape: :func:`rf.server.openai_api.openai_error`).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from typing import TYPE_CHECKING, Any

from rf.errors import Forbidden, HostNotAllowed, RfError, Unauthorized, UnsupportedMediaType
from rf.jsonfast import dumpb

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
    Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
    ASGIApp = Callable[..., Awaitable[None]]

_BODY_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
_ENVS = frozenset(("staging", "production"))
LOOPBACK_NAMES = frozenset(("localhost", "127.0.0.1", "::1"))


def is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split_host(value: str) -> tuple[str, str]:
    """``("name", "port")`` of a Host header value (IPv6 in brackets; port may be empty)."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return value, ""
        return value[1:end], value[end + 2:] if value[end + 1:end + 2] == ":" else ""
    if value.count(":") == 1:
        name, _, port = value.partition(":")
        return name, port
    return value, ""


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Guard:
    """ASGI middleware: Host, Origin, content type, endpoint keys, agent code (see the module doc)."""

    def __init__(self, app: ASGIApp, *, services: Any, token: str, bind_host: str = "127.0.0.1",
                 allowed_hosts: list[str] | tuple[str, ...] = (), require_keys: bool = False,
                 peer_check: Callable[[Any, Any], bool] | None = None) -> None:
        self.app = app
        self.services = services
        self._token = token.encode()
        self.names = {"localhost"} | {h.lower().strip("[]") for h in allowed_hosts}
        bind = bind_host.lower().strip("[]")
        if bind and bind not in ("0.0.0.0", "::"):  # a wildcard bind names no host
            self.names.add(bind)
        self.configured = {h.lower().strip("[]") for h in allowed_hosts}
        self.require_keys = require_keys
        self.peer_check = peer_check
        self._hosts: dict[bytes, tuple[str, str]] = {}  # Host values already allowed, parsed
        self._json_types: set[bytes | None] = set()  # Content-Type values already accepted

    def _is_json(self, ctype: bytes | None) -> bool:
        ok = _is_json(ctype)
        if ok and len(self._json_types) < 64:
            self._json_types.add(ctype)
        return ok

    # ------------------------------------------------------------------ ASGI
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":  # rf serves no websockets: refuse before any route sees one
                return await send({"type": "websocket.close", "code": 1008})
            return await self.app(scope, receive, send)
        host = origin = ctype = auth = None
        has_body = False
        for key, value in scope["headers"]:
            if key == b"host":
                host = value
            elif key == b"content-type":
                ctype = value
            elif key == b"authorization" or key == b"x-rf-token":
                auth = value if key == b"x-rf-token" else (value[7:] if value[:7].lower() == b"bearer " else b"")
            elif key == b"origin":
                origin = value
            elif key == b"content-length":
                has_body = value != b"0"
            elif key == b"transfer-encoding":
                has_body = True
        try:
            known = self._hosts.get(host) if host is not None else None
            host_name, host_port = known if known is not None else self._check_host(host)
            if origin is not None:
                self._check_origin(origin, host_name, host_port)
            path: str = scope["path"]
            first, _, rest = path[1:].partition("/")
            hook = first in _ENVS and rest.startswith("hooks/")
            if (has_body and not hook and scope.get("method", "GET") in _BODY_METHODS
                    and ((ctype not in self._json_types and not self._is_json(ctype))
                         or (rest == "mcp" and first in _ENVS and _is_form(ctype)))):
                raise UnsupportedMediaType(
                    "request bodies must be JSON (Content-Type: application/json)",
                    "send the header, e.g. curl -H 'content-type: application/json' -d '{\"input\": ...}'")
            if first in _ENVS and not hook:
                session = "/sessions/" in rest
                if session or self.require_keys:
                    self._check_key(first, auth, session)
            elif first == "api" and rest != "health":
                if auth:
                    scope["rf.actor"] = self.actor(auth)
                if self.peer_check is not None and await asyncio.to_thread(
                        self.peer_check, scope.get("client"), scope.get("server")):
                    raise Forbidden(
                        "the management API does not answer agent code (this connection comes from a "
                        "process an rf worker started)",
                        "agents use ctx (prompts, connectors, memory, sessions); production changes are "
                        "published by a person: rf releases publish")
        except RfError as exc:
            parts = scope["path"].split("/", 3)  # "/staging/v1/models" -> ["", "staging", "v1", "models"]
            return await _refuse(send, exc, openai=len(parts) > 2 and parts[1] in _ENVS and parts[2] == "v1")
        return await self.app(scope, receive, send)

    # ------------------------------------------------------------------ checks
    def actor(self, presented: bytes) -> Any:
        """The actor a management token names (None: no such live token): the owner for the
        per-start token, the user for a personal one (one hash and one dict lookup)."""
        return resolve_actor(self.services, self._token, presented)

    def _check_host(self, raw: bytes | None) -> tuple[str, str]:
        if raw is None:
            raise HostNotAllowed("the request has no Host header", "send Host: 127.0.0.1:PORT (any HTTP/1.1 client does)")
        text = raw.decode("latin-1")
        name, port = _split_host(text)
        if name in self.names or name.endswith(".localhost") or _is_ip(name):
            if len(self._hosts) < 256:  # the few Host values real clients send, parsed once
                self._hosts[raw] = (name, port)
            return name, port
        raise HostNotAllowed(
            f"this rf server does not answer to the host name {name!r}",
            f'if you reach it by that name on purpose, add it to rf.toml: [server] allowed_hosts = ["{name}"]')

    def _check_origin(self, raw: bytes, host_name: str, host_port: str) -> None:
        text = raw.decode("latin-1").strip().lower()
        scheme, sep, rest = text.partition("://")
        if sep and scheme in ("http", "https"):
            name, port = _split_host(rest.rstrip("/"))
            if (name, port) == (host_name, host_port) or name in self.configured:
                return
        raise Forbidden(f"requests from the web page at {text or 'null'} are refused",
                        "rf's endpoints answer programs and rf's own pages, not other sites; call them from "
                        "a server or script (no Origin header)")

    def _check_key(self, env: str, presented: bytes | None, session: bool) -> None:
        if presented:
            if hmac.compare_digest(presented, self._token):
                return
            if self.services.check_endpoint_key(env, presented.decode("latin-1")):
                return
        what = "session reads need" if session and not self.require_keys else "this server needs"
        raise Unauthorized(
            f"this key does not open {env} (unknown, revoked, or another environment's)" if presented
            else f"{what} an endpoint key of {env} (or the management token)",
            f"create one: rf keys create --env {env} --name NAME; send it as Authorization: Bearer KEY")


def resolve_actor(services: Any, token: bytes, presented: bytes) -> Any:
    """:class:`rf.services.users.Actor` of a presented management token, or None."""
    from rf.services.users import owner

    if not presented:
        return None
    if hmac.compare_digest(presented, token):
        return owner()
    return services.actor_for_token(presented.decode("latin-1"))


def _is_json(ctype: bytes | None) -> bool:
    if ctype is None:
        return False
    media = ctype.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media == b"application/x-www-form-urlencoded" or (
        media.startswith(b"application/") and media.endswith(b"+json"))


def _is_form(ctype: bytes | None) -> bool:
    return ctype is not None and ctype.split(b";", 1)[0].strip().lower() == b"application/x-www-form-urlencoded"


async def _refuse(send: Send, exc: RfError, *, openai: bool = False) -> None:
    if openai:  # /{env}/v1/...: OpenAI clients read their API's error shape (rf.server.openai_api)
        from rf.server.openai_api import openai_error

        body = dumpb(openai_error(exc.http_status, exc.to_dict()))
    else:
        body = dumpb({"error": exc.to_dict()})
    await send({"type": "http.response.start", "status": exc.http_status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
