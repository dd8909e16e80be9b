"""``connect()``: the one way commands reach rf's state.

If a server owns the store (``.rf/server.json`` names a live pid, or
``RF_SERVER_URL`` is set), commands talk to it over HTTP (:class:`HttpBackend`).
Otherwise the command opens the store in-process for its own duration
(:class:`LocalBackend`). Both expose the same methods and return the same
models — the Backend protocol — and one contract test suite runs on both.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from rf import api, serverinfo
from rf.config import Workspace, find_workspace
from rf.errors import RfError, ServerError, from_dict
from rf.models import Agent, AgentDiff, Commit, DeployResult, Execution, PromoteResult, Status

if TYPE_CHECKING:
    from rf.services import Services


class Backend(Protocol):
    """What every surface (CLI, TUI, tests) calls. See :mod:`rf.api`."""

    kind: str
    workspace: Workspace | None

    def status(self) -> Status: ...
    def list_agents(self) -> list[Agent]: ...
    def get_agent(self, name: str) -> Agent: ...
    def history(self, name: str) -> list[Commit]: ...
    def diff_agent(self, name: str, base: str | None = None, head: str | None = None) -> AgentDiff: ...
    def deploy(self, name: str, files: dict[str, bytes], message: str = "", author: str = "unknown") -> DeployResult: ...
    def promote(self, name: str, author: str = "unknown", message: str = "") -> PromoteResult: ...
    def run_test(self, name: str, files: dict[str, bytes], input: Any = None, session_id: str | None = None,
                 on_chunk: Callable[[Any], None] | None = None) -> Execution: ...
    def invoke(self, env: str, name: str, input: Any = None, session_id: str | None = None,
               source: str = "invoke", on_chunk: Callable[[Any], None] | None = None) -> Execution: ...
    def list_executions(self, env: str = "staging", agent: str | None = None, status: str | None = None,
                        source: str | None = None, limit: int = 50, before: str | None = None) -> list[Execution]: ...
    def get_execution(self, execution_id: str, env: str | None = None) -> Execution: ...
    def close(self) -> None: ...


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

    def _request(self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None) -> Any:
        if query:
            clean = {k: ("true" if v is True else "false" if v is False else v) for k, v in query.items() if v is not None}
            if clean:
                path += "?" + urllib.parse.urlencode(clean)
        conn_cls = http.client.HTTPSConnection if self._parsed.scheme == "https" else http.client.HTTPConnection
        conn = conn_cls(self._parsed.hostname or "127.0.0.1", self._parsed.port, timeout=self.timeout)
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
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
        if route.method == "GET":
            data = self._request("GET", "/api" + path, query=params)
        else:
            data = self._request(route.method, "/api" + path, body=params)
        return api.decode_result(route, data)

    # The Backend protocol, one line each (see rf.api.ROUTES).
    def status(self) -> Status:
        return self.call("status")  # type: ignore[no-any-return]

    def list_agents(self) -> list[Agent]:
        return self.call("list_agents")  # type: ignore[no-any-return]

    def get_agent(self, name: str) -> Agent:
        return self.call("get_agent", name=name)  # type: ignore[no-any-return]

    def history(self, name: str) -> list[Commit]:
        return self.call("history", name=name)  # type: ignore[no-any-return]

    def diff_agent(self, name: str, base: str | None = None, head: str | None = None) -> AgentDiff:
        return self.call("diff_agent", name=name, base=base, head=head)  # type: ignore[no-any-return]

    def deploy(self, name: str, files: dict[str, bytes], message: str = "", author: str = "unknown") -> DeployResult:
        return self.call("deploy", name=name, files=files, message=message, author=author)  # type: ignore[no-any-return]

    def promote(self, name: str, author: str = "unknown", message: str = "") -> PromoteResult:
        return self.call("promote", name=name, author=author, message=message)  # type: ignore[no-any-return]

    def run_test(self, name: str, files: dict[str, bytes], input: Any = None, session_id: str | None = None,
                 on_chunk: Callable[[Any], None] | None = None) -> Execution:
        ex: Execution = self.call("run_test", name=name, files=files, input=input, session_id=session_id)
        if on_chunk is not None and isinstance(ex.output, list):
            pass  # chunks are not streamed over the management API; the output holds them all
        return ex

    def invoke(self, env: str, name: str, input: Any = None, session_id: str | None = None,
               source: str = "invoke", on_chunk: Callable[[Any], None] | None = None) -> Execution:
        return self.call("invoke", env=env, name=name, input=input, session_id=session_id,  # type: ignore[no-any-return]
                         source=source)

    def list_executions(self, env: str = "staging", agent: str | None = None, status: str | None = None,
                        source: str | None = None, limit: int = 50, before: str | None = None) -> list[Execution]:
        return self.call("list_executions", env=env, agent=agent, status=status,  # type: ignore[no-any-return]
                         source=source, limit=limit, before=before)

    def get_execution(self, execution_id: str, env: str | None = None) -> Execution:
        return self.call("get_execution", execution_id=execution_id, env=env)  # type: ignore[no-any-return]

    def close(self) -> None:
        pass


def open_local(ws: Workspace, *, wait_s: float = 3.0) -> LocalBackend:
    """Open the workspace's store in this process."""
    from rf.services import Services
    from rf.store import Store

    store = Store.open(ws.db_path, wait_s=wait_s)
    return LocalBackend(Services(store, ws))


def connect(workspace: Workspace | str | None = None, *, wait_s: float | None = None) -> Backend:
    """The running server if there is one, else the store in-process."""
    ws = workspace if isinstance(workspace, Workspace) else find_workspace(workspace)
    url = os.environ.get("RF_SERVER_URL")
    if url:
        return HttpBackend(url, os.environ.get("RF_SERVER_TOKEN", ""), ws)
    info = serverinfo.read(ws.server_file)
    if info is not None:
        return HttpBackend(info.url, info.token, ws)
    if wait_s is None:
        wait_s = float(os.environ.get("RF_LOCK_WAIT_S", "3"))
    return open_local(ws, wait_s=wait_s)


__all__ = ["Backend", "HttpBackend", "LocalBackend", "RfError", "connect", "open_local"]
