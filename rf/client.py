"""``connect()``: the one way commands reach rf's state.

If a server owns the store (``.rf/server.json`` names a live pid, or
``RF_SERVER_URL`` is set), commands talk to it over HTTP (:class:`HttpBackend`).
Otherwise the command opens the store in-process for its own duration
(:class:`LocalBackend`). Both expose the same methods and return the same
models — the Backend protocol — and one contract test suite runs on both.
"""

from __future__ import annotations

import base64
import functools
import inspect
import json
import os
import urllib.parse
from typing import TYPE_CHECKING, Any, cast

from rf import api, serverinfo
from rf.config import Workspace, find_workspace
from rf.errors import RfError, ServerError, from_dict

if TYPE_CHECKING:
    from rf.services import Services


# The Backend protocol *is* the public method set of Services: LocalBackend
# forwards to it in-process, HttpBackend sends the same call to the server,
# which runs the same Services method (see rf.api.ROUTES). Type checkers see
# Services, so every caller is checked against the real signatures.
if TYPE_CHECKING:
    Backend = Services
else:
    Backend = Any


class LocalBackend:
    """The store opened in this process, for the length of one command."""

    kind = "local"

    def __init__(self, services: Services) -> None:
        self.services = services
        self.workspace = services.workspace

    def __getattr__(self, name: str) -> Any:
        if name in api.BY_NAME:
            return getattr(self.services, name)
        raise AttributeError(name)

    def close(self) -> None:
        self.services.close()
        self.services.store.close()


class HttpBackend:
    """The management API of a running ``rf serve``/``rf ui``."""

    kind = "http"

    def __init__(self, url: str, token: str, workspace: Workspace | None = None, *, timeout: float = 120.0) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ServerError(f"invalid server URL {url!r}", "use http://HOST:PORT")
        self.url = url.rstrip("/")
        self._parsed = parsed
        self.token = token
        self.workspace = workspace
        self.timeout = timeout

    def _connection(self) -> Any:
        import http.client  # only when a server is running (~20 ms that local commands need not pay)

        conn_cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
        return conn_cls(self._parsed.hostname or "127.0.0.1", self._parsed.port, timeout=self.timeout)

    @property
    def inline_body_bytes(self) -> int:
        """The largest body sent in one request: half of ``[server] max_body_bytes`` (as this
        workspace's rf.toml says; the server's may differ a little). A larger body of a route
        that accepts one is sent ahead in chunks of this size (:meth:`_upload`)."""
        from rf.config import DEFAULT_MAX_BODY

        return (self.workspace.max_body_bytes if self.workspace is not None else DEFAULT_MAX_BODY) // 2

    def _body(self, route: api.Route, params: dict[str, Any]) -> bytes:
        """The JSON body of a call: inline, or ``{"upload": ID}`` once a large one is uploaded."""
        payload = json.dumps(params).encode()
        if route.accepts_upload and len(payload) > self.inline_body_bytes:
            payload = json.dumps({"upload": self._upload(payload)}).encode()
        return payload

    def _upload(self, payload: bytes) -> str:
        """Send ``payload`` in chunks to ``POST /api/uploads`` (see rf.services.uploads); its id."""
        import secrets

        upload = secrets.token_urlsafe(18)
        step = max(3, self.inline_body_bytes * 3 // 4 // 3 * 3)  # base64 of a chunk: within inline_body_bytes
        for offset in range(0, max(len(payload), 1), step):
            chunk = base64.b64encode(payload[offset:offset + step]).decode("ascii")
            self._request("POST", "/api/uploads",
                          {"upload": upload, "offset": offset, "total": len(payload), "data": chunk})
        return upload

    def _request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None,
                 *, payload: bytes | None = None) -> Any:
        import http.client

        if query:
            clean = {k: ("true" if v is True else "false" if v is False else v) for k, v in query.items() if v is not None}
            if clean:
                path += "?" + urllib.parse.urlencode(clean)
        conn = self._connection()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            payload = json.dumps(body).encode()
        if payload is not None:
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, self._parsed.path.rstrip("/") + path, body=payload, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServerError(
                f"cannot reach the rf server at {self.url}: {exc}",
                "check that `rf serve` is running (or stop it and delete .rf/server.json)",
            ) from None
        finally:
            conn.close()
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            raise ServerError(f"the rf server answered {resp.status} with non-JSON data") from None
        if resp.status >= 400:
            if isinstance(data, dict) and isinstance(data.get("error"), dict):
                raise from_dict(data["error"])
            raise ServerError(f"the rf server answered {resp.status}: {str(data)[:200]}")
        return data

    def _run_test_streaming(self, params: dict[str, Any], on_chunk: Any) -> Any:
        """``rf test`` through the server with each chunk passed to ``on_chunk`` as the agent
        yields it (the route answers server-sent events when asked to)."""
        import http.client

        route = api.BY_NAME["run_test"]
        path = "/api" + route.path.replace("{name}", urllib.parse.quote(str(params.pop("name")), safe=""))
        params["files"] = api.encode_files(params["files"])
        payload = self._body(route, params)
        conn = self._connection()
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "text/event-stream",
                   "Content-Type": "application/json"}
        try:
            try:
                conn.request("POST", self._parsed.path.rstrip("/") + path, body=payload, headers=headers)
                resp = conn.getresponse()
                if resp.status >= 400 or not resp.getheader("content-type", "").startswith("text/event-stream"):
                    raw = resp.read()
                    try:
                        data = json.loads(raw) if raw else None
                    except ValueError:
                        data = None
                    if isinstance(data, dict) and isinstance(data.get("error"), dict):
                        raise from_dict(data["error"])
                    raise ServerError(f"the rf server answered {resp.status}: {raw[:200]!r}")
                event = "message"
                for line in iter(resp.readline, b""):
                    text = line.decode("utf-8").rstrip("\r\n")
                    if text.startswith("event:"):
                        event = text[6:].strip()
                    elif text.startswith("data:"):
                        data = json.loads(text[5:])
                        if event == "chunk":
                            on_chunk(data)
                        elif event == "done":
                            return api.decode_result(route, data)
                        elif event == "error":
                            raise from_dict(data)
            except (OSError, http.client.HTTPException) as exc:
                raise ServerError(
                    f"cannot reach the rf server at {self.url}: {exc}",
                    "check that `rf serve` is running (or stop it and delete .rf/server.json)",
                ) from None
            except ValueError:
                raise ServerError("the rf server sent an event that is not JSON") from None
        finally:
            conn.close()
        raise ServerError("the rf server ended the stream before the execution's result")

    def call(self, _method: str, /, **params: Any) -> Any:
        route = api.BY_NAME[_method]
        path = route.path
        for key in list(params):
            token = "{" + key + "}"
            if token in path:
                path = path.replace(token, urllib.parse.quote(str(params.pop(key)), safe=""))
        for key in route.binary:
            if key in params:
                params[key] = api.encode_files(params[key])
        for key, value in params.items():
            if isinstance(value, bytes):  # a bytes parameter travels base64-encoded (msgspec's JSON form)
                params[key] = base64.b64encode(value).decode("ascii")
        if route.method == "GET":
            data = self._request("GET", "/api" + path, query=params)
        else:
            data = self._request(route.method, "/api" + path, payload=self._body(route, params))
        return api.decode_result(route, data)

    def __getattr__(self, name: str) -> Any:
        """Every Backend method: bind the arguments as Services would, send them."""
        route = api.BY_NAME.get(name)
        if route is None:
            raise AttributeError(name)
        signature = _signature(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            try:
                bound = signature.bind(None, *args, **kwargs)
            except TypeError as exc:
                raise TypeError(f"{name}(): {exc}") from None
            params = {k: v for k, v in bound.arguments.items() if k != "self"}
            on_chunk = params.pop("on_chunk", None)
            if name == "run_test" and callable(on_chunk):
                return self._run_test_streaming(params, on_chunk)
            # Other callbacks cannot cross HTTP: chunks arrive in the final output instead.
            params = {k: v for k, v in params.items() if not callable(v)}
            # The server sets its own parameters (an execution's source...) and refuses a
            # request that names one: one given at its default value is simply not sent.
            # `author` never is: the server records the name the token belongs to.
            for key in route.server_params() & params.keys():
                if key == "author" or params[key] == signature.parameters[key].default:
                    del params[key]
            result = self.call(name, **params)
            if name == "status":
                result.server_url = result.server_url or self.url
            return result

        method.__name__ = name
        return method

    def close(self) -> None:
        pass


@functools.cache
def _signature(name: str) -> inspect.Signature:
    from rf.services import Services

    return inspect.signature(getattr(Services, name))


def open_local(ws: Workspace, *, wait_s: float = 3.0) -> LocalBackend:
    """Open the workspace's store in this process (built by the composition root, rf.compose)."""
    from rf import compose

    return compose.open_local(ws, wait_s=wait_s)


# ---------------------------------------------------------------- rf login: a server and its token
#: Keyring service of the personal tokens saved by ``rf login`` (username: the server URL).
LOGIN_SERVICE = "login"


def normalize_url(url: str) -> str:
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ServerError(f"invalid server URL {url!r}", "use http://HOST:PORT")
    return url.strip().rstrip("/")


def login_file(ws: Workspace) -> Any:
    """``.rf/login.json``: the server ``rf login`` chose for this workspace (the URL only; the
    token is in the keyring, or rf's 0600 secrets file where there is none)."""
    return ws.state_dir / "login.json"


def login_url(ws: Workspace) -> str | None:
    try:
        data = json.loads(login_file(ws).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = data.get("url") if isinstance(data, dict) else None
    return url if isinstance(url, str) and url else None


def stored_token(url: str) -> str | None:
    """The token ``rf login`` saved for ``url`` (None: none saved)."""
    from rf.secrets import SecretStore

    return SecretStore(LOGIN_SERVICE).stored(normalize_url(url))


def save_login(ws: Workspace, url: str, token: str) -> None:
    """Keep ``token`` for ``url`` (keyring) and make ``url`` this workspace's server."""
    from rf.secrets import SecretStore

    url = normalize_url(url)
    SecretStore(LOGIN_SERVICE).set(url, token)
    path = login_file(ws)
    ws.ensure_state_dir()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"url": url}, f)


def forget_login(ws: Workspace) -> str | None:
    """Undo ``rf login`` for this workspace (the saved token goes too); the URL it named."""
    from rf.secrets import SecretStore

    url = login_url(ws)
    if url is not None:
        SecretStore(LOGIN_SERVICE).delete(url)
    try:
        login_file(ws).unlink()
    except FileNotFoundError:
        pass
    return url


def connect(workspace: Workspace | str | None = None, *, wait_s: float | None = None) -> Backend:
    """The server to use if there is one, else the store in-process.

    In order: ``RF_SERVER_URL`` (with ``RF_TOKEN``, else the token ``rf login`` saved for it),
    the server ``rf login`` chose for this workspace, the workspace's own running server
    (``.rf/server.json``: its owner's token), else the store in-process (as the owner).
    """
    ws = workspace if isinstance(workspace, Workspace) else find_workspace(workspace)
    url = os.environ.get("RF_SERVER_URL")
    if url:
        token = os.environ.get("RF_TOKEN") or os.environ.get("RF_SERVER_TOKEN") or stored_token(url) or ""
        return cast("Backend", HttpBackend(url, token, ws))
    remote = login_url(ws)
    if remote is not None:
        return cast("Backend", HttpBackend(remote, stored_token(remote) or "", ws))
    info = serverinfo.read(ws.server_file)
    if info is not None:
        return cast("Backend", HttpBackend(info.url, info.token, ws))
    if wait_s is None:
        wait_s = float(os.environ.get("RF_LOCK_WAIT_S", "3"))
    return cast("Backend", open_local(ws, wait_s=wait_s))


__all__ = ["Backend", "HttpBackend", "LocalBackend", "RfError", "connect", "open_local"]
