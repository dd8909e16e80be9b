"""The management API as a table: one row per Backend method.

Both sides read this table: the server mounts one route per row under
``/api`` and calls the :class:`~rf.services.Services` method of the same name;
:class:`~rf.client.HttpBackend` turns a method call into that request and the
JSON answer back into models. One table means the two backends cannot drift
apart (and the contract tests prove it).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from rf import models


@dataclass(frozen=True)
class Route:
    name: str  #: Services / Backend method name
    method: str  #: HTTP method
    path: str  #: path template under /api, e.g. "/agents/{name}"
    returns: Any = None  #: a model class, [ModelClass] for a list, or None for plain JSON
    binary: tuple[str, ...] = ()  #: params holding {path: bytes} maps (sent base64)
    summary: str = ""


ROUTES: list[Route] = [
    Route("status", "GET", "/status", models.Status, summary="Workspace, server and agents at a glance"),
    Route("list_agents", "GET", "/agents", [models.Agent], summary="List agents with both environments' commits"),
    Route("get_agent", "GET", "/agents/{name}", models.Agent, summary="One agent"),
    Route("history", "GET", "/agents/{name}/history", [models.Commit], summary="Commits of an agent, newest first"),
    Route("diff_agent", "GET", "/agents/{name}/diff", models.AgentDiff, summary="Per-file diff production → staging"),
    Route("deploy", "POST", "/agents/{name}/deploy", models.DeployResult, binary=("files",),
          summary="Snapshot files into a commit and point staging at it"),
    Route("promote", "POST", "/agents/{name}/promote", models.PromoteResult,
          summary="Point production at staging's commit (a one-item release)"),
    Route("run_test", "POST", "/agents/{name}/test", models.Execution, binary=("files",),
          summary="Run working-copy files in staging mode (rf test)"),
    Route("invoke", "POST", "/invoke/{env}/{name}", models.Execution,
          summary="Run an environment's deployed agent and record the execution"),
    Route("list_executions", "GET", "/executions", [models.Execution], summary="Executions of one environment"),
    Route("get_execution", "GET", "/executions/{execution_id}", models.Execution, summary="One execution"),
]

# One list per capability; each is filled by the module that implements it.
PROMPT_ROUTES: list[Route] = []
CONNECTOR_ROUTES: list[Route] = []
CREDENTIAL_ROUTES: list[Route] = []
PROVIDER_ROUTES: list[Route] = []
SESSION_ROUTES: list[Route] = []
TRACE_ROUTES: list[Route] = []

ROUTES += PROMPT_ROUTES + CONNECTOR_ROUTES + CREDENTIAL_ROUTES + PROVIDER_ROUTES + SESSION_ROUTES + TRACE_ROUTES

BY_NAME = {r.name: r for r in ROUTES}


def encode_files(files: dict[str, bytes]) -> dict[str, str]:
    return {path: base64.b64encode(data).decode("ascii") for path, data in files.items()}


def decode_files(files: Any) -> dict[str, bytes]:
    from rf.errors import UsageError

    if not isinstance(files, dict):
        raise UsageError("files must be an object of {path: base64}")
    try:
        return {str(p): base64.b64decode(d, validate=True) for p, d in files.items()}
    except (ValueError, TypeError):
        raise UsageError("files must be base64-encoded") from None


def decode_result(route: Route, data: Any) -> Any:
    if route.returns is None:
        return data
    if isinstance(route.returns, list):
        return [models.from_dict(route.returns[0], item) for item in data]
    return models.from_dict(route.returns, data)
