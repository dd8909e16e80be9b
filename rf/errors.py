"""One error hierarchy for rf.

Every error a user can see is an :class:`RfError`: a one-line ``message`` that
says what went wrong and a ``hint`` that says what to do next. Library
exceptions (DuckDB, httpx, OS errors) are converted into these at the boundary
that catches them, so no raw traceback ever reaches a user.

Each class carries the HTTP status the server answers with, and a stable
``code`` so the HTTP client can re-raise the same class on the other side.
"""

from __future__ import annotations

from typing import Any


class RfError(Exception):
    """Base class: a message for the user and, when known, the next step."""

    code = "error"
    http_status = 400
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


class UsageError(RfError):
    """The command line or request was malformed (exit code 2)."""

    code = "usage"
    exit_code = 2


class NotFound(RfError):
    """A named thing (agent, execution, commit, ...) does not exist."""

    code = "not_found"
    http_status = 404


class Conflict(RfError):
    """The request conflicts with the current state (e.g. a stale plan)."""

    code = "conflict"
    http_status = 409


class ProductionReadOnly(RfError):
    """A mutation aimed at production outside a publish/promote."""

    code = "production_read_only"
    http_status = 403


class InvalidAgent(RfError):
    """An agent directory, agent.toml or agent code that cannot be used."""

    code = "invalid_agent"
    http_status = 422


class WorkspaceError(RfError):
    """No workspace, or a broken one."""

    code = "workspace"


class StoreError(RfError):
    """The DuckDB store cannot be used (busy, too new, corrupt)."""

    code = "store"
    http_status = 503


class ServerError(RfError):
    """The rf server could not be reached or answered badly."""

    code = "server"
    http_status = 502


class PayloadTooLarge(RfError):
    code = "payload_too_large"
    http_status = 413


class Unauthorized(RfError):
    code = "unauthorized"
    http_status = 401


class Forbidden(RfError):
    """The caller is known but may not do this (a foreign Origin, agent code on the management API)."""

    code = "forbidden"
    http_status = 403


class HostNotAllowed(RfError):
    """The request named a Host the server does not answer to (DNS rebinding, a misrouted proxy)."""

    code = "host_not_allowed"
    http_status = 421


class UnsupportedMediaType(RfError):
    """A request body that is not JSON."""

    code = "unsupported_media_type"
    http_status = 415


class TooBusy(RfError):
    """Too many requests already wait for a worker: answered 429 with ``Retry-After``."""

    code = "too_busy"
    http_status = 429
    retry_after_s = 1


class ConnectorError(RfError):
    """A connector call reached for the remote API and failed: it answered an HTTP error,
    timed out, or could not be reached. Agent code can catch it: ``from rf import ConnectorError``.

    The message names only the connector, the resource and what happened (``HTTP 503``,
    ``timed out``, ``could not connect``), because an uncaught one becomes the execution's
    error, which an endpoint returns to its caller: the URL and the API's answer are in
    the call's trace span instead. ``status`` is the HTTP status the API answered (None
    when there was no answer); ``body`` is the start of the body of that answer (secrets
    masked), for agent code that wants to look at it."""

    code = "connector"
    http_status = 502

    def __init__(self, message: str, hint: str | None = None, status: int | None = None,
                 body: str | None = None) -> None:
        super().__init__(message, hint)
        self.status = status
        self.body = body

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "status": self.status, "body": self.body}


class AgentCallError(RfError):
    """``ctx.agents.invoke`` did not get an answer from the other agent: its execution failed
    (``execution_id`` and ``error`` say which and why), or the call was refused before any
    ran (a cycle, the depth limit, no time left: ``execution_id`` is None). Agent code can
    catch it: ``from rf import AgentCallError``."""

    code = "agent_call"
    http_status = 502

    def __init__(self, message: str, hint: str | None = None, agent: str | None = None,
                 execution_id: str | None = None, error: str | None = None,
                 error_type: str | None = None) -> None:
        super().__init__(message, hint)
        self.agent = agent  #: the agent called
        self.execution_id = execution_id  #: the child execution (None: none ran)
        self.error = error  #: the child execution's error
        self.error_type = error_type  #: its ``error_type`` (exception, timeout, ...)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "agent": self.agent, "execution_id": self.execution_id, "error": self.error,
                "error_type": self.error_type}


class ExecutionFailed(RfError):
    """An agent execution failed (raised by callers that want an exception)."""

    code = "execution_failed"
    http_status = 500


_BY_CODE: dict[str, type[RfError]] = {}


def _register() -> None:
    stack: list[type[RfError]] = [RfError]
    while stack:
        cls = stack.pop()
        _BY_CODE[cls.code] = cls
        stack.extend(cls.__subclasses__())


def from_dict(data: dict[str, Any]) -> RfError:
    """Rebuild an error sent by the server (see :meth:`RfError.to_dict`)."""
    code = str(data.get("code"))
    if code not in _BY_CODE:
        _register()  # subclasses defined in modules imported since the last call
    cls = _BY_CODE.get(code, RfError)
    message, hint = str(data.get("message", "unknown error")), data.get("hint")
    if cls is ConnectorError:
        status, body = data.get("status"), data.get("body")
        return ConnectorError(message, hint, status if isinstance(status, int) and not isinstance(status, bool)
                              else None, body if isinstance(body, str) else None)
    if cls is AgentCallError:
        fields = {key: value if isinstance(value, str) else None
                  for key, value in ((k, data.get(k)) for k in ("agent", "execution_id", "error", "error_type"))}
        return AgentCallError(message, hint, **fields)
    return cls(message, hint)
